"""`import lif_cuda` on its own, in a fresh interpreter, loads the compiled kernels (the extension
links against torch's libraries, so the package must import torch first)."""
import subprocess
import sys


def test_import_alone_loads_the_extension():
    code = "import lif_cuda, sys; sys.exit(0 if lif_cuda.extension_loaded() else 3)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"extension not loaded in a fresh process: {res.stderr[-2000:]}"
