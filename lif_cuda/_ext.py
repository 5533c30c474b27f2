"""Loads the compiled extension, if there is one. Never raises: callers ask `available(device)`."""
import warnings

import torch  # loads libc10/libtorch, which the compiled extension links against


def build_mismatch(built, installed):
    """An ImportError when the extension was built for another torch than the installed one (its C++
    ABI may differ: a call could crash instead of failing), else None."""
    if built == installed:
        return None
    return ImportError(f"lif_cuda._C was built for torch {built}, but torch {installed} is installed")


_C = None
_LOAD_ERROR = None
try:  # pragma: no cover - depends on the build
    from . import _C  # noqa: F401  (registers torch.ops.lif_cuda.*)

    _LOAD_ERROR = build_mismatch(_C.torch_version(), torch.__version__)
    if _LOAD_ERROR is not None:
        _C = None
except Exception as exc:  # ImportError, or an undefined symbol from a build against another torch
    _C = None
    _LOAD_ERROR = exc


def loaded() -> bool:
    return _C is not None


def load_error():
    return _LOAD_ERROR


def load_failure() -> str:
    """Why the extension is not loaded, and what to do: a build made against another torch fails with
    an undefined symbol, and only a rebuild against the installed one helps."""
    return (
        f"the compiled extension failed to load ({_LOAD_ERROR}); build it for the installed torch "
        f"{torch.__version__} with `pip install --no-build-isolation -e .` (or `make install`) in the "
        "lif_cuda source tree"
    )


def _probe():
    if _C is None:
        return {}
    return {
        dev: torch._C._dispatch_has_kernel_for_dispatch_key("lif_cuda::lif_forward", key)
        for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"))
    }


# Asked once, at import: torch.compile cannot trace the dispatcher query (a graph break), but it
# traces a lookup in this dict.
_KERNELS = _probe()


def available(device_type: str) -> bool:
    """Whether the fused op has a kernel for this device type ("cpu", "cuda")."""
    return _KERNELS.get(device_type, False)


_warned = set()


def warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
