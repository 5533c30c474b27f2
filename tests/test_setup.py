"""setup.py picks the CUDA toolkit before torch.utils.cpp_extension reads it.

torch.utils.cpp_extension sets its CUDA_HOME once, when it is imported: from $CUDA_HOME, else from
the directory above the first `nvcc` on PATH. Where that nvcc is a wrapper script
(/usr/local/bin/nvcc on the GPU machines), torch guesses CUDA_HOME=/usr/local and the link of
-lcudart fails; setup.py must set CUDA_HOME to the real toolkit first. Checked in a fresh
interpreter that pretends torch was built with CUDA (the CPU wheel here leaves CUDA_HOME unset).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = Path("/usr/local/cuda")

PROBE = r"""
import runpy, sys
import torch
torch.cuda._is_compiled = lambda: True  # as on a CUDA build of torch
torch.version.cuda = "13.0"
torch.cuda.is_available = lambda: False
sys.argv = ["setup.py", "--name"]
runpy.run_path("setup.py", run_name="__main__")
import torch.utils.cpp_extension as ce
print("CUDA_HOME=" + str(ce.CUDA_HOME))
"""


@pytest.mark.skipif(not (TOOLKIT / "bin" / "nvcc").exists() or not (TOOLKIT / "include" / "cuda_runtime.h").exists(),
                    reason="needs the CUDA toolkit at /usr/local/cuda")
def test_cuda_home_is_the_toolkit_not_where_an_nvcc_wrapper_sits(tmp_path):
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {TOOLKIT}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH", "LIF_NO_CUDA", "LIF_FORCE_CUDA")}
    env["PATH"] = f"{wrapper_dir}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    homes = [line.split("=", 1)[1] for line in proc.stdout.splitlines() if line.startswith("CUDA_HOME=")]
    assert homes and os.path.realpath(homes[-1]) == os.path.realpath(TOOLKIT), (
        f"cpp_extension took CUDA_HOME={homes}, not {TOOLKIT} (the nvcc on PATH is {wrapper})"
    )
