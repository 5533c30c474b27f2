"""The functional API: `lif_evolve(...)` for people who keep the parameters themselves.

It checks arguments once (same errors on every backend), picks the backend, and runs either the
fused op (lif_cuda.ops) or the pure-PyTorch reference (lif_cuda.reference).
"""
import math

import torch

from . import _ext
from ._checks import (
    CHECKED_VALUES,
    _is_compiling,
    check_evolve_args,
    check_lengths,
    check_reference_values,
    check_spike_fn,
    compute_dtype,
    param_values,
)
from .noise import draw_noise_key, kernel_noise
from .ops import SURROGATE_IDS, lif_forward_op
from .reference import PeriodicExponential, StepPWL, lif_evolve_reference

__all__ = ["lif_evolve", "fused_available", "resolve_backend"]

_FUSED_SURROGATES = {StepPWL: SURROGATE_IDS["StepPWL"], PeriodicExponential: SURROGATE_IDS["PeriodicExponential"]}
_BACKENDS = ("auto", "fused", "reference")


def fused_available(device) -> bool:
    """Whether the fused kernels exist for this device (a torch.device, or "cpu"/"cuda")."""
    return _ext.available(torch.device(device).type)


# The surrogate id of a spike function without a fused kernel (a user's own autograd.Function).
NO_KERNEL = -1


def surrogate_id(spike_generation_fn) -> int:
    """The fused kernels' id for this surrogate (0 StepPWL, 1 PeriodicExponential), or NO_KERNEL;
    TypeError for what is no autograd.Function. Identity tests only: dynamo can neither hash nor
    issubclass() an autograd.Function class, so under torch.compile the type check is skipped (it
    ran in eager mode on the same arguments)."""
    if spike_generation_fn is StepPWL:
        return _FUSED_SURROGATES[StepPWL]
    if spike_generation_fn is PeriodicExponential:
        return _FUSED_SURROGATES[PeriodicExponential]
    if not _is_compiling():
        check_spike_fn(spike_generation_fn)
    return NO_KERNEL


def resolve_backend(backend, device, spike_generation_fn=StepPWL, surrogate=None) -> str:
    """Returns "fused" or "reference" for a call on `device`; warns once when falling back.
    `surrogate`: the id of spike_generation_fn if already known (surrogate_id)."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if surrogate is None:
        surrogate = surrogate_id(spike_generation_fn)
    elif surrogate == NO_KERNEL:
        check_spike_fn(spike_generation_fn)  # a bad value set after construction: named here
    if backend == "reference":
        return "reference"
    if surrogate == NO_KERNEL:
        name = getattr(spike_generation_fn, "__name__", repr(spike_generation_fn))
        if backend == "fused":
            raise ValueError(
                f"backend='fused' but spike_generation_fn={name} has no fused kernel (only StepPWL and "
                "PeriodicExponential do): use backend='auto' or 'reference'"
            )
        _ext.warn_once(
            ("surrogate", name),
            f"lif_cuda: spike_generation_fn={name} has no fused kernel (only StepPWL and "
            "PeriodicExponential do); running the pure-PyTorch reference path",
        )
        return "reference"
    dev = torch.device(device)
    if fused_available(dev):
        return "fused"
    why = (
        f"the compiled extension failed to load ({_ext.load_error()})"
        if not _ext.loaded()
        else f"the extension was built without {dev.type.upper()} kernels"
    )
    if backend == "fused":
        raise RuntimeError(f"lif_cuda: backend='fused' requested for {dev.type} but {why}")
    _ext.warn_once(("fallback", dev.type), f"lif_cuda: {why}; using the pure-PyTorch reference on {dev.type}")
    return "reference"


def lif_evolve(
    input,
    v0,
    tau_mem,
    threshold,
    bias,
    dt,
    noise=None,
    learning_window=0.5,
    max_spikes_per_dt=2.0**16,
    spike_generation_fn=StepPWL,
    record=False,
    backend="auto",
    noise_std=0.0,
    lengths=None,
    _surrogate=None,
):
    """Evolve LIF neurons (SPEC §1) over `input` (B,T,N) from membrane `v0` ((B,N) or (N,)).

    tau_mem, threshold, bias: tensors of shape (N,) or (); dt, learning_window, max_spikes_per_dt:
    numbers. Noise (SPEC §4): `noise`, an explicit (B,T,N) tensor added at every step, or
    `noise_std` > 0, drawn as noise_std*sqrt(dt)*N(0,1) inside the fused kernel from a Philox
    stream keyed by torch's default generator: reproducible under torch.manual_seed, the same on CPU
    and CUDA, and on the reference path (which computes the same stream, lif_cuda.noise).
    Computes in input's dtype; float16/bfloat16 input is computed in float32 (spikes in the input's
    dtype, membrane in float32).
    Variable lengths (SPEC §8): `lengths`, B integers (an integer tensor (B,) on the input's device
    or the CPU, or a list), 0 <= lengths[b] <= T: row b runs its first lengths[b] steps, exactly as
    that row alone would; later steps are padding: no spikes, the recorded membrane holds its last
    value, zero input gradient, nothing added to the parameter gradients, and gradients arriving
    there are ignored. The final state is the state after lengths[b] steps.
    Returns (spikes (B,T,N), vmem (B,T,N) post-reset or None unless record, final state (B,N)).
    Differentiable w.r.t. input, v0, tau_mem, threshold, bias (and noise).
    """
    dt, window, max_spikes, noise_std = check_evolve_args(
        input, v0, tau_mem, threshold, bias, dt, noise, learning_window, max_spikes_per_dt, noise_std
    )
    if _surrogate is None:
        _surrogate = surrogate_id(spike_generation_fn)
    which = resolve_backend(backend, input.device, spike_generation_fn, _surrogate)
    B, T = input.shape[0], input.shape[1]
    # The fused CPU op checks the values of CPU lengths itself (C++, no dispatch).
    lengths = check_lengths(lengths, B, T, input.device, values=which == "reference" or input.device.type != "cpu")
    # In-kernel noise: the Philox key (seed, offset) comes from torch's default CPU generator,
    # whatever the device, drawn by the op itself at run time (eager and compiled alike), and here
    # in the same way for the reference path (lif_cuda.noise): one seed, one stream, everywhere.
    noise_scale = noise_std * math.sqrt(dt) if noise is None and noise_std > 0 else 0.0
    if which == "reference":
        check_reference_values(input.device, param_values(tau_mem, threshold, bias))
        if noise_scale > 0:
            noise = kernel_noise(input.shape, noise_scale, draw_noise_key(), compute_dtype(input.dtype), input.device)
        return lif_evolve_reference(
            input, v0, tau_mem, threshold, bias, dt, noise, window, max_spikes, spike_generation_fn, record,
            lengths=lengths,
        )
    if input.device.type != "cpu":  # the op checks CPU values itself
        CHECKED_VALUES.check(param_values(tau_mem, threshold, bias))
    # The op takes v0 (B,N) or (N,) and parameters (N,) or () as they are, in the compute dtype.
    dtype = compute_dtype(input.dtype)
    v0, tau_mem, threshold, bias = (t if t.dtype == dtype else t.to(dtype) for t in (v0, tau_mem, threshold, bias))
    if noise is not None and noise.dtype != dtype:
        noise = noise.to(dtype)
    spikes, vmem, v_final, _, _ = lif_forward_op(
        input, v0, tau_mem, threshold, bias, noise, None, dt, noise_scale, window, max_spikes,
        _surrogate, record, False, lengths,
    )
    return spikes, (vmem if record else None), v_final
