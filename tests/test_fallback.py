"""A missing or broken compiled extension never breaks `import lif_cuda`.

Each case runs a fresh interpreter in which importing `lif_cuda._C` fails in a different way:
  missing  - a meta-path finder raises ImportError for it (as when no .so was built);
  blocked  - sys.modules["lif_cuda._C"] = None (Python's own "import of this name is blocked");
  broken   - the loader raises OSError (as dlopen does for a .so with an undefined symbol or a
             mismatched torch ABI);
  version  - it loads, but was built for another torch than the installed one (lif_cuda._C's
             torch_version()): refused as if it had failed to load.
Then: `import lif_cuda` succeeds; extension_loaded() and fused_available("cpu") are False;
backend="auto" (functional and LIFNeuron) runs the reference, bit-identical to calling it
directly, forward and backward, with exactly one RuntimeWarning in the whole process; and
backend="fused" raises a RuntimeError that says the fused backend was asked for and why it is not
there (the original import error) and how to rebuild it, for the functional API and for LIFNeuron alike.
"""
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    r'''
    import importlib.abc
    import importlib.machinery
    import sys
    import warnings

    MODE = sys.argv[1]
    REASON = "simulated failure of lif_cuda._C (" + MODE + ")"
    # The error text that must reach the user: ours, or Python's own for a blocked import.
    CAUSE = {"blocked": "lif_cuda._C", "version": "built for torch 0.0.0+other"}.get(MODE, REASON)
    # ... and how to rebuild it for the installed torch.
    REBUILD = "pip install --no-build-isolation -e ."

    class BrokenLoader(importlib.abc.Loader):
        def create_module(self, spec):
            raise OSError(REASON + ": undefined symbol: _ZN2at4_ops10lif_forward")

        def exec_module(self, module):
            raise AssertionError("unreachable")

    class OtherTorchLoader(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            module.torch_version = lambda: "0.0.0+other"

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "lif_cuda._C":
                return None
            if MODE == "missing":
                raise ImportError(REASON)
            return importlib.machinery.ModuleSpec(name, OtherTorchLoader() if MODE == "version" else BrokenLoader())

    if MODE == "blocked":
        sys.modules["lif_cuda._C"] = None
    else:
        sys.meta_path.insert(0, Finder())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch
        import lif_cuda
        from lif_cuda.reference import lif_evolve_reference

        assert not lif_cuda.extension_loaded(), "the extension must not count as loaded"
        assert not lif_cuda.fused_available("cpu")
        assert MODE == "version" or "lif_cuda._C" not in sys.modules or sys.modules["lif_cuda._C"] is None
        assert not hasattr(torch.ops.lif_cuda, "lif_forward") if hasattr(torch.ops, "lif_cuda") else True

        g = torch.Generator().manual_seed(0)
        B, T, N = 2, 7, 5
        args = dict(input=torch.randn(B, T, N, generator=g) + 0.6, v0=torch.randn(B, N, generator=g),
                    tau_mem=torch.full((N,), 0.02), threshold=torch.full((N,), 0.7), bias=torch.zeros(N), dt=1e-3)

        def run(fn, **kw):
            leaves = {
                k: (v.clone().requires_grad_(True) if isinstance(v, torch.Tensor) else v) for k, v in args.items()
            }
            s, w, f = fn(**leaves, record=True, **kw)
            (s.sum() + w.sum() + f.sum()).backward()
            return [s, w, f] + [leaves[k].grad for k in ("input", "v0", "tau_mem", "threshold", "bias")]

        want = run(lif_evolve_reference)
        for _ in range(3):  # auto falls back, every time, and warns once
            got = run(lif_cuda.lif_evolve, backend="auto")
            assert all(torch.equal(a, b) for a, b in zip(got, want)), "auto fallback != reference"
        got = run(lif_cuda.lif_evolve)  # the default backend is auto
        assert all(torch.equal(a, b) for a, b in zip(got, want))

        m = lif_cuda.LIFNeuron(N, tau_mem=0.02, threshold=0.7)  # backend="auto"
        ref_m = lif_cuda.LIFNeuron(N, tau_mem=0.02, threshold=0.7, backend="reference")
        for _ in range(2):
            x = torch.randn(B, T, N, generator=g) + 0.6
            assert torch.equal(m(x), ref_m(x))
            assert torch.equal(m.vmem, ref_m.vmem)
        m(x).sum().backward()
        assert m.tau_mem.grad is not None

        # backend="fused": a clear error, never a silent fallback.
        for call in (lambda: lif_cuda.lif_evolve(**args, backend="fused"),
                     lambda: lif_cuda.LIFNeuron(N, backend="fused")(args["input"])):
            try:
                call()
            except RuntimeError as exc:
                msg = str(exc)
                assert "fused" in msg and "failed to load" in msg and CAUSE in msg and REBUILD in msg, msg
            else:
                raise AssertionError("backend='fused' without the extension must raise")

    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning) and "lif_cuda" in str(w.message)]
    assert len(runtime) == 1, [str(w.message) for w in runtime]
    msg = str(runtime[0].message)
    assert "reference" in msg and CAUSE in msg and REBUILD in msg, msg
    print("FALLBACK-OK")
    '''
)


@pytest.mark.parametrize("mode", ["missing", "blocked", "broken", "version"])
def test_import_and_fallback_without_extension(mode):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0 and "FALLBACK-OK" in proc.stdout, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def test_the_build_records_the_installed_torch():
    """The check behind the "version" case reads what setup.py compiled in: this build's torch is the
    installed one (else the whole suite would be running the reference)."""
    import torch

    from lif_cuda import _ext

    if not _ext.loaded():
        pytest.skip(f"no compiled extension: {_ext.load_error()}")
    assert _ext._C.torch_version() == torch.__version__
    assert _ext.build_mismatch("0.0.0", torch.__version__) is not None
    assert _ext.build_mismatch(torch.__version__, torch.__version__) is None
