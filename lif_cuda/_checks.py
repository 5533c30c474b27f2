"""Argument checks made in Python (SPEC §6): a clear exception naming the argument, raised before
any kernel runs, so that a failed call changes nothing.

The fused ops check shapes, dtypes, devices and the values of CPU tensors themselves, in C++
(csrc: TORCH_CHECK_VALUE/TYPE, ValueError/TypeError naming the argument). Python checks only what
they cannot: the Python types and numbers of the functional API, lengths given as a list, the
values of CUDA tensors (once per change, CheckedValues), and everything on the reference backend,
which must refuse what the fused op refuses (check_lif_tensors, check_synaptic_tensors).
"""
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


def _is_capturing() -> bool:
    """Whether the current CUDA stream is being captured into a CUDA graph (torch.cuda.graph,
    torch.compile's "reduce-overhead"): a host read of a device value is an error there, and a copy
    from host memory would be replayed from a buffer that is gone."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def compute_dtype(io_dtype):
    """The dtype of the state and the arithmetic for input of dtype `io_dtype` (SPEC §1; half
    precision input is computed in float32)."""
    return torch.float32 if io_dtype in (torch.float16, torch.bfloat16) else io_dtype


def check_tensor_type(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_scalar(name, value, *, positive=False, nonneg=False, at_least=None):
    """A number argument (or a one-element tensor, read once) as a float, finite and in range."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got {value.dtype}")
        value = value.item()
    if type(value) is not float:  # a float skips isinstance(numbers.Real)'s Python frames
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


# ------------------------------------------------------------------ parameter values (SPEC §6)


DECAY = "decay"  # a parameter rule beside True (> 0) and False (finite): a decay, in [0, 1]


def _param_ok(t, positive):
    """A 0-dim bool tensor (no host sync): t is finite (and > 0, or in [0, 1] for DECAY) everywhere."""
    with torch.no_grad():
        if positive == DECAY:
            return ((t >= 0) & (t <= 1)).all()
        ok = torch.isfinite(t).all()
        return ok & (t > 0).all() if positive else ok


def _param_rule_text(positive):
    return "in [0, 1]" if positive == DECAY else ("finite and > 0" if positive else "finite")


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
            raise ValueError(f"{name} must be {_param_rule_text(positive)} everywhere, got {t.detach().cpu()}")


class CheckedValues:
    """Parameter value checks for devices other than the CPU, made once per change.

    On the CPU the op checks values itself, in C++, at no cost. On CUDA reading a value costs a
    device-to-host copy and a stream sync, so a tensor is checked (one sync for all that need it)
    only when it was not seen before or its version counter or storage moved since it was found
    valid: an in-place write (an optimiser step, `p.copy_`, `p[i] = v`) bumps the version and is
    seen; a write through `p.data` bypasses autograd's version counter and is not.

    Under torch.compile and under CUDA graph capture the values are not read (a host read breaks
    the graph, or the capture): nothing is recorded as valid then, so the next eager call checks.
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
        if not stale or _is_capturing():
            return
        check_param_values(stale)
        for _, t, _ in stale:
            key = id(t)
            self._valid[key] = (weakref.ref(t, lambda _, k=key: self._valid.pop(k, None)), (t._version, t.data_ptr()))


CHECKED_VALUES = CheckedValues()


# ------------------------------------------------------------------------------ lengths (SPEC §8)


def to_lengths(lengths, B, T, device, *, checked_by_op):
    """Per-row lengths as the op takes them: None or an int64 tensor on `device`. Given as a list, a
    tuple or an integer tensor of shape (B,) on the input's device or the CPU, 0 <= lengths[b] <= T.

    `checked_by_op`: the fused CPU op checks the shape, device and values itself (C++, free);
    otherwise they are checked here (B None: the input is refused anyway). A CPU tensor (or a list)
    is checked before it is copied to the device, asynchronously, from a private pinned copy (no
    host sync; the host allocator keeps it until the copy is done); under CUDA graph capture it is
    refused (the graph would replay the copy from that buffer). A tensor already on a CUDA device
    costs one host sync per call, skipped under torch.compile and under capture, where the kernels
    clamp what they read to [0, T]."""
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
    if not checked_by_op and B is not None:
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise ValueError(f"lengths must have shape ({B},) (one length per batch row), got {tuple(lengths.shape)}")
        if lengths.device != device and lengths.device.type != "cpu":
            raise ValueError(
                f"lengths is on {lengths.device} but the input is on {device}: put it on the input's device or the CPU"
            )
        on_host = lengths.device.type == "cpu"
        if B > 0 and not _is_compiling() and (on_host or not _is_capturing()):
            bad = (lengths < 0) | (lengths > T)
            if bool(bad.any()):
                i = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"lengths must be in [0, T] = [0, {T}] (T the number of time steps), got {int(lengths[i])} at "
                    f"index {i}"
                )
    if lengths.device == device or lengths.device.type != "cpu":
        return lengths if lengths.dtype == torch.int64 else lengths.to(torch.int64)
    if device.type != "cuda":
        return lengths.to(torch.int64, copy=True).to(device)
    if _is_capturing():
        raise ValueError(
            f"lengths is on the CPU, and a copy from host memory cannot be captured in a CUDA graph: pass lengths "
            f"on {device} (an int64 tensor of shape ({B},))"
        )
    # A private pinned copy: the caller may change its tensor at once, and the host allocator does
    # not reuse the buffer before the asynchronous copy has read it.
    staged = torch.empty(lengths.shape, dtype=torch.int64, pin_memory=True)
    staged.copy_(lengths)
    return staged.to(device, non_blocking=True)


# ------------------------------------------------- the reference backend's tensor checks (SPEC §6)
# The fused op makes these in C++; the reference path makes them here, with the same exception
# types and argument names (tests/test_bad_input.py runs every row on both backends).


def check_float_tensor(name, t, allow_half=False):
    check_tensor_type(name, t)
    if t.is_complex() or not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64), got {t.dtype}")
    if t.dtype not in _FLOAT_DTYPES and not allow_half:
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")


def _check_device(name, t, device):
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the input is on {device}: put both on one device")


def check_param(name, t, n, device):
    """A per-neuron parameter: shape (N,) or (), floating, on `device`."""
    check_float_tensor(name, t)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n},) or (), got {tuple(t.shape)}")
    _check_device(name, t, device)


def _check_state(name, t, shapes, device):
    check_float_tensor(name, t)
    if tuple(t.shape) not in shapes:
        raise ValueError(f"{name} must have shape {' or '.join(map(str, shapes))}, got {tuple(t.shape)}")
    _check_device(name, t, device)


def check_tau_syn(t, n, s, device=None, name="tau_syn"):
    """tau_syn (or the decay beta, `name`): (N,S), (1,S) or () (Rockpool's shapes), floating, on
    `device`."""
    check_float_tensor(name, t)
    if tuple(t.shape) not in ((n, s), (1, s), ()):
        raise ValueError(f"{name} must have shape ({n}, {s}), (1, {s}) or (), got {tuple(t.shape)}")
    if device is not None:
        _check_device(name, t, device)


def check_w_rec(w, n, s, device=None):
    check_float_tensor("w_rec", w)
    if tuple(w.shape) != (n, n * s):
        raise ValueError(f"w_rec must have shape (N, N*S) = ({n}, {n * s}), got {tuple(w.shape)}")
    if device is not None:
        _check_device("w_rec", w, device)


def _check_input(input, last):
    check_float_tensor("input", input, allow_half=True)
    if input.dim() != 3:
        raise ValueError(f"input must have shape (B, T, {last}), got {tuple(input.shape)}")


def _check_noise(noise, shape, device):
    if noise is not None:
        check_float_tensor("noise", noise, allow_half=True)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape} (one term per neuron), got {tuple(noise.shape)}")
        _check_device("noise", noise, device)


def check_lif_tensors(input, state, params, noise, leak=("tau_mem",)):
    """lif_evolve's tensors (SPEC §1): input (B,T,N), v0 (B,N) or (N,), parameters (N,) or ();
    `leak`: the name of the leak parameter (tau_mem, or alpha for a decay)."""
    (v0,), (tau_mem, threshold, bias) = state, params
    _check_input(input, "N")
    B, T, N = input.shape
    dev = input.device
    check_float_tensor("v0", v0)
    # (N,) first: comparing (N,) with (B, N) would compare N with B, a guard under torch.export.
    if tuple(v0.shape) != (N,) and tuple(v0.shape) != (B, N):
        raise ValueError(f"v0 must have shape ({B}, {N}) or ({N},), got {tuple(v0.shape)}")
    _check_device("v0", v0, dev)
    check_param(leak[0], tau_mem, N, dev)
    check_param("threshold", threshold, N, dev)
    check_param("bias", bias, N, dev)
    _check_noise(noise, (B, T, N), dev)


def check_adaptive_tensors(input, state, params, noise):
    """adaptive_evolve's tensors (SPEC §10): lif_evolve's, and b0 (B,N) or (N,), tau_adapt and
    beta_adapt (N,) or ()."""
    (v0, b0), (tau_mem, threshold, bias, tau_adapt, beta_adapt) = state, params
    check_lif_tensors(input, (v0,), (tau_mem, threshold, bias), noise)
    B, T, N = input.shape
    dev = input.device
    _check_state("b0", b0, ((N,), (B, N)), dev)
    check_param("tau_adapt", tau_adapt, N, dev)
    check_param("beta_adapt", beta_adapt, N, dev)


def check_synaptic_tensors(input, state, params, noise, leak=("tau_mem", "tau_syn")):
    """synaptic_evolve's tensors (SPEC §7): input (B,T,N*S), i0 (B,N,S) or (N,S) (it gives N and
    S), v0 and s0 (B,N) or (N,), tau_syn (N,S), (1,S) or (), w_rec (N, N*S) or None; `leak`: the
    names of the leak parameters (the time constants, or the decays alpha and beta)."""
    (v0, i0, s0), (tau_mem, tau_syn, threshold, bias, w_rec) = state, params
    _check_input(input, "N*S")
    B, T, NS = input.shape
    dev = input.device
    check_float_tensor("i0", i0)
    if i0.dim() not in (2, 3) or (i0.dim() == 3 and i0.shape[0] != B):
        raise ValueError(f"i0 (the synaptic currents) must have shape ({B}, N, S) or (N, S), got {tuple(i0.shape)}")
    N, S = i0.shape[-2], i0.shape[-1]
    if S < 1 and N > 0:
        raise ValueError(f"i0 must have at least one synapse per neuron (N, S >= 1), got {tuple(i0.shape)}")
    if NS != N * S:
        raise ValueError(f"input's last dimension must be N*S = {N}*{S} = {N * S}, got shape {tuple(input.shape)}")
    check_param(leak[0], tau_mem, N, dev)
    check_tau_syn(tau_syn, N, S, dev, leak[1])
    check_param("threshold", threshold, N, dev)
    check_param("bias", bias, N, dev)
    if w_rec is not None:
        check_w_rec(w_rec, N, S, dev)
    _check_state("v0", v0, ((N,), (B, N)), dev)
    _check_state("i0", i0, ((N, S), (B, N, S)), dev)
    if s0 is not None:
        _check_state("s0", s0, ((N,), (B, N)), dev)
    _check_noise(noise, (B, T, N), dev)


def check_ahp_synaptic_tensors(input, state, params, noise, leak=("tau_mem", "tau_syn")):
    """ahp_synaptic_evolve's tensors (SPEC §9): synaptic_evolve's, and w_ahp, tau_ahp (N,) or (), h0
    (B,N) or (N,)."""
    (v0, i0, s0, h0), (tau_mem, tau_syn, threshold, bias, w_rec, w_ahp, tau_ahp) = state, params
    check_synaptic_tensors(input, (v0, i0, s0), (tau_mem, tau_syn, threshold, bias, w_rec), noise, leak=leak)
    B, N, dev = input.shape[0], i0.shape[-2], input.device
    check_param("w_ahp", w_ahp, N, dev)
    check_param("tau_ahp", tau_ahp, N, dev)
    _check_state("h0", h0, ((N,), (B, N)), dev)
