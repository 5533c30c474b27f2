"""Argument checks shared by every backend (SPEC §6): a clear exception naming the argument,
raised before any kernel runs, so that a failed call changes nothing."""
import math
import numbers
import weakref

import torch

_FLOAT_DTYPES = (torch.float32, torch.float64)


def _is_compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - older torch
        return False


def check_float_tensor(name, t, allow_half=False):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_complex() or not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64), got {t.dtype}")
    if t.dtype not in _FLOAT_DTYPES and not allow_half:
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")


def check_scalar(name, value, *, positive=False, nonneg=False, at_least=None):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got {value.dtype}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonneg and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if at_least is not None and not value >= at_least:
        raise ValueError(f"{name} must be >= {at_least}, got {value}")
    return value


def check_spike_fn(fn):
    """spike_generation_fn must be a torch.autograd.Function subclass (StepPWL, PeriodicExponential
    or the user's own): anything else would fail deep inside the time loop."""
    if not (isinstance(fn, type) and issubclass(fn, torch.autograd.Function)):
        raise TypeError(
            "spike_generation_fn must be a torch.autograd.Function subclass such as "
            f"lif_cuda.StepPWL, got {fn!r}"
        )


def check_param(name, t, n, device, *, positive):
    """A per-neuron parameter: shape (N,) or (), floating, on `device`, finite (and > 0)."""
    check_float_tensor(name, t)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n},) or (), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the input is on {device}: put both on one device")


def _param_ok(t, positive):
    """A 0-dim bool tensor (no host sync): t is finite (and > 0) everywhere."""
    with torch.no_grad():
        ok = torch.isfinite(t).all()
        return ok & (t > 0).all() if positive else ok


def check_param_values(params):
    """Value checks of (name, tensor, positive) triples with one host sync in all (on CUDA each
    bool() of a device tensor is a sync). Skipped inside a compiled graph (it would break it)."""
    params = [p for p in params if p[1].numel() > 0]
    if _is_compiling() or not params:
        return
    flags = torch.stack([_param_ok(t, positive) for _, t, positive in params])
    if bool(flags.all()):
        return
    for name, t, positive in params:  # the failing one, for the message
        if not bool(_param_ok(t, positive)):
            what = "finite and > 0" if positive else "finite"
            raise ValueError(f"{name} must be {what} everywhere, got {t.detach().cpu()}")


class CheckedValues:
    """Parameter value checks for the fused path on devices other than the CPU, made once per change.

    On the CPU the op checks values itself, in C++, at no cost. On CUDA reading a value costs a
    device-to-host copy and a stream sync, so a tensor is checked (one sync for all that need it)
    only when it was not seen before or its version counter or storage moved since it was found
    valid: an in-place write (an optimiser step, `p.copy_`, `p[i] = v`) bumps the version and is
    seen; a write through `p.data` bypasses autograd's version counter and is not.
    """

    def __init__(self):
        self._valid = {}  # id(tensor) -> (weakref, (version, data_ptr))

    def check(self, params):
        if _is_compiling():
            return
        stale = []
        for name, t, positive in params:
            entry = self._valid.get(id(t))
            if entry is None or entry[0]() is not t or entry[1] != (t._version, t.data_ptr()):
                stale.append((name, t, positive))
        if not stale:
            return
        check_param_values(stale)
        for _, t, _ in stale:
            key = id(t)
            self._valid[key] = (weakref.ref(t, lambda _, k=key: self._valid.pop(k, None)), (t._version, t.data_ptr()))


CHECKED_VALUES = CheckedValues()


def check_reference_values(device, params):
    """The parameters' values before the pure-PyTorch reference runs: on the CPU every call (no
    sync), elsewhere once per change (CHECKED_VALUES), as on the fused path."""
    if device.type == "cpu":
        check_param_values(params)
    else:
        CHECKED_VALUES.check(params)


def compute_dtype(io_dtype):
    """The dtype of the state and the arithmetic for input of dtype `io_dtype` (SPEC §1; half
    precision input is computed in float32)."""
    return torch.float32 if io_dtype in (torch.float16, torch.bfloat16) else io_dtype


def check_evolve_args(
    input, v0, tau_mem, threshold, bias, dt, noise, learning_window, max_spikes_per_dt, noise_std=0.0
):
    """Checks the functional API's arguments but the parameters' values (the caller checks those
    where the op does not: param_values()); returns (dt, window, max_spikes, noise_std) as floats."""
    check_float_tensor("input", input, allow_half=True)
    if input.dim() != 3:
        raise ValueError(f"input must have shape (B, T, N), got {tuple(input.shape)}")
    B, T, N = input.shape
    dev = input.device
    check_float_tensor("v0", v0)
    # (N,) first: comparing (N,) with (B, N) would compare N with B, a guard under torch.export.
    if tuple(v0.shape) != (N,) and tuple(v0.shape) != (B, N):
        raise ValueError(f"v0 must have shape ({B}, {N}) or ({N},), got {tuple(v0.shape)}")
    if v0.device != dev:
        raise ValueError(f"v0 is on {v0.device} but the input is on {dev}: put both on one device")
    check_param("tau_mem", tau_mem, N, dev, positive=True)
    check_param("threshold", threshold, N, dev, positive=True)
    check_param("bias", bias, N, dev, positive=False)
    return check_step_settings(input, noise, (B, T, N), dt, learning_window, max_spikes_per_dt, noise_std)


def check_max_spikes(value, dtype):
    """max_spikes_per_dt (SPEC §6): +inf, or a number >= 1 (a one-element tensor is read once). A
    clamp beyond `dtype`'s range (the compute dtype) is no clamp: inf (the kernels would round it to
    inf)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return math.inf
    max_spikes = check_scalar("max_spikes_per_dt", value, at_least=1)
    return math.inf if max_spikes > torch.finfo(dtype).max else max_spikes


def check_step_settings(input, noise, noise_shape, dt, learning_window, max_spikes_per_dt, noise_std):
    """The noise tensor (one term per neuron and step, on the input's device) and the scalar settings
    of a call (SPEC §6), shared by the LIF and the synaptic op. Returns (dt, window, max_spikes,
    noise_std) as the op takes them."""
    if noise is not None:
        check_float_tensor("noise", noise, allow_half=True)
        if tuple(noise.shape) != noise_shape:
            raise ValueError(f"noise must have shape {noise_shape} (one term per neuron), got {tuple(noise.shape)}")
        if noise.device != input.device:
            raise ValueError(f"noise is on {noise.device} but the input is on {input.device}: put both on one device")
    dt = check_scalar("dt", dt, positive=True)
    window = check_scalar("learning_window", learning_window, nonneg=True)
    max_spikes = check_max_spikes(max_spikes_per_dt, compute_dtype(input.dtype))
    noise_std = check_scalar("noise_std", noise_std, nonneg=True)
    if noise is not None and noise_std > 0:
        raise ValueError("give either a noise tensor or noise_std > 0, not both")
    return dt, window, max_spikes, noise_std


def check_lengths(lengths, B, T, device, *, values=True):
    """Per-row lengths (SPEC §8): None, or B integers 0 <= lengths[b] <= T, as a list/tuple or an
    integer tensor of shape (B,) on the input's device or the CPU. Returns None or an int64 tensor
    on `device`, as the op takes it.

    `values`: check the range here. Free for a CPU tensor (or a list), which is checked before it is
    copied to the device, asynchronously (non_blocking, from a private pageable copy: no host sync).
    A tensor already on a CUDA device costs one host sync per call (skipped under torch.compile,
    where the kernels clamp what they read to [0, T]). The fused CPU op checks the values itself, in
    C++, so its callers pass values=False."""
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor):
        if not isinstance(lengths, (list, tuple)):
            raise TypeError(
                f"lengths must be an integer tensor of shape ({B},) or a list of {B} integers, got "
                f"{type(lengths).__name__}"
            )
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"lengths must be a list of {B} integers, got {lengths!r}") from exc
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"lengths must hold integers (an integer tensor or a list of ints), got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape ({B},) (one length per batch row), got {tuple(lengths.shape)}")
    if lengths.device != device and lengths.device.type != "cpu":
        raise ValueError(
            f"lengths is on {lengths.device} but the input is on {device}: put it on the input's device or the CPU"
        )
    if values and B > 0 and not _is_compiling():
        bad = (lengths < 0) | (lengths > T)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"lengths must be in [0, T] = [0, {T}] (T the number of time steps), got {int(lengths[i])} at index {i}"
            )
    if lengths.device == device:
        return lengths if lengths.dtype == torch.int64 else lengths.to(torch.int64)
    # A private pageable copy: the asynchronous copy stages it at once, whatever the caller does next.
    return lengths.to(torch.int64, copy=True).to(device, non_blocking=True)


def param_values(tau_mem, threshold, bias):
    return [("tau_mem", tau_mem, True), ("threshold", threshold, True), ("bias", bias, False)]
