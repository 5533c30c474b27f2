"""The functional API (`lif_evolve`, `synaptic_evolve`, `adaptive_evolve`) and the one call path every model takes.

A model is described once (`Model`: its state, parameters and records in the op's order, its fused
op and its reference); `run` takes any model through the fused op (lif_cuda.ops, which checks
shapes, dtypes, devices and CPU values in C++) or the pure-PyTorch reference (lif_cuda.reference,
checked here first, lif_cuda._checks). The modules (lif_cuda.neurons) call `run` too.

A new model, on the Python side: its `Model` here (with a reference adapter), its reference
(lif_cuda.reference) and the reference's tensor checks (lif_cuda._checks), its functional face here,
and its module face, a NeuronLayer subclass (lif_cuda.neurons). A new surrogate: its class in
lif_cuda.surrogates.
"""
import sys
from functools import partial
from typing import Callable, NamedTuple, Tuple

import torch

from . import _ext
from ._checks import (
    CHECKED_VALUES,
    DECAY,
    check_adaptive_tensors,
    check_ahp_synaptic_tensors,
    check_lif_tensors,
    check_max_spikes,
    check_param_values,
    check_scalar,
    check_synaptic_tensors,
    check_tensor_type,
    compute_dtype,
    to_lengths,
)
from .noise import draw_noise_key, kernel_noise, kernel_noise_scale
from .ops import (  # noqa: F401  (looked up by name in `run`)
    adaptive_forward_op,
    ahp_synaptic_forward_op,
    lif_forward_op,
    synaptic_forward_op,
)
from .reference import (  # noqa: F401  (looked up by name in `run`)
    adaptive_evolve_reference,
    lif_evolve_reference,
    synaptic_evolve_reference,
)
from .surrogates import FUSED_NAMES, NO_KERNEL, StepPWL, check_spike_fn, kernel_id_of

__all__ = [
    "lif_evolve",
    "synaptic_evolve",
    "ahp_synaptic_evolve",
    "adaptive_evolve",
    "fused_available",
    "resolve_backend",
    "run",
    "LIF",
    "SYNAPTIC",
    "AHP_SYNAPTIC",
    "ADAPTIVE",
    "LIF_DECAYS",
    "SYNAPTIC_DECAYS",
    "AHP_SYNAPTIC_DECAYS",
    "LEAK_MODES",
]

_BACKENDS = ("auto", "fused", "reference")
_FLOATS = (torch.float32, torch.float64)
_CPU = torch.device("cpu")  # compared with, not device.type: that read costs microseconds per call
_this = sys.modules[__name__]  # `run` finds the ops and references here by name (tests replace them)


class Model(NamedTuple):
    """What the call path needs to know of a neuron model (SPEC §1, §7)."""

    initial: Tuple[str, ...]  # the initial state's arguments, in the op's order (v0, ...)
    state: Tuple[str, ...]  # the state a module keeps, one buffer per initial state argument
    params: Tuple[str, ...]  # the parameters, in the op's order
    positive: Tuple[str, ...]  # the parameters whose values must be > 0 (the others: finite)
    checked: Tuple[str, ...]  # the parameters whose values are checked (SPEC §6)
    records: Tuple[str, ...]  # the records (record=True), in the op's order
    forward_op: str  # the fused op's name in this module
    reference: str  # the reference's name in this module
    call_reference: Callable  # (reference, run's arguments but `which` and `kernel_id`) -> the op's outputs
    check_tensors: Callable  # (input, state, params, noise): the reference backend's checks
    decays: Tuple[str, ...] = ()  # the leak parameters given as decays in [0, 1] (the ops' `decays`)


def _lif_reference(reference, x, state, params, dt, noise, window, max_spikes, spike_fn, record, lengths,
                   decays=False):
    return reference(x, *state, *params, dt, noise, window, max_spikes, spike_fn, record, lengths=lengths,
                     decays=decays)


def _synaptic_reference(reference, x, state, params, dt, noise, window, max_spikes, spike_fn, record, lengths,
                        decays=False):
    (v0, i0, s0), (tau_mem, tau_syn, threshold, bias, w_rec) = state, params
    return reference(
        x, v0, i0, tau_mem, tau_syn, threshold, bias, dt, w_rec=w_rec, s0=s0, noise=noise, learning_window=window,
        max_spikes_per_dt=max_spikes, spike_generation_fn=spike_fn, record=record, lengths=lengths, decays=decays,
    )


def _ahp_synaptic_reference(reference, x, state, params, dt, noise, window, max_spikes, spike_fn, record, lengths,
                            decays=False):
    (v0, i0, s0, h0), (tau_mem, tau_syn, threshold, bias, w_rec, w_ahp, tau_ahp) = state, params
    return reference(
        x, v0, i0, tau_mem, tau_syn, threshold, bias, dt, w_rec=w_rec, s0=s0, noise=noise, learning_window=window,
        max_spikes_per_dt=max_spikes, spike_generation_fn=spike_fn, record=record, lengths=lengths, w_ahp=w_ahp,
        tau_ahp=tau_ahp, h0=h0, decays=decays,
    )


def _adaptive_reference(reference, x, state, params, dt, noise, window, max_spikes, spike_fn, record, lengths):
    # Time constants only (no leak modes for AdaptiveLIF): the reference takes no `decays`.
    return reference(x, *state, *params, dt, noise, window, max_spikes, spike_fn, record, lengths=lengths)


LIF = Model(
    initial=("v0",), state=("vmem",), params=("tau_mem", "threshold", "bias"), positive=("tau_mem", "threshold"),
    checked=("tau_mem", "threshold", "bias"), records=("vmem",), forward_op="lif_forward_op",
    reference="lif_evolve_reference", call_reference=_lif_reference, check_tensors=check_lif_tensors,
)
SYNAPTIC = Model(
    initial=("v0", "i0", "s0"), state=("vmem", "isyn", "spikes"),
    params=("tau_mem", "tau_syn", "threshold", "bias", "w_rec"),
    positive=("tau_mem", "tau_syn", "threshold"), checked=("tau_mem", "tau_syn", "threshold", "bias"),
    records=("vmem", "isyn", "irec"), forward_op="synaptic_forward_op", reference="synaptic_evolve_reference",
    call_reference=_synaptic_reference, check_tensors=check_synaptic_tensors,
)
# The same models with their leaks given as decays (Rockpool's leak_mode "decays"): alpha =
# exp(-dt/tau_mem) and beta = exp(-dt/tau_syn) are the parameters, trained directly.
LIF_DECAYS = LIF._replace(
    params=("alpha", "threshold", "bias"), positive=("threshold",), checked=("alpha", "threshold", "bias"),
    call_reference=partial(_lif_reference, decays=True), check_tensors=partial(check_lif_tensors, leak=("alpha",)),
    decays=("alpha",),
)
SYNAPTIC_DECAYS = SYNAPTIC._replace(
    params=("alpha", "beta", "threshold", "bias", "w_rec"), positive=("threshold",),
    checked=("alpha", "beta", "threshold", "bias"), call_reference=partial(_synaptic_reference, decays=True),
    check_tensors=partial(check_synaptic_tensors, leak=("alpha", "beta")), decays=("alpha", "beta"),
)
LEAK_MODES = ("taus", "decays")
AHP_SYNAPTIC = Model(
    initial=("v0", "i0", "s0", "h0"), state=("vmem", "isyn", "spikes", "iahp"),
    params=("tau_mem", "tau_syn", "threshold", "bias", "w_rec", "w_ahp", "tau_ahp"),
    positive=("tau_mem", "tau_syn", "threshold", "tau_ahp"),
    checked=("tau_mem", "tau_syn", "threshold", "bias", "w_ahp", "tau_ahp"),
    records=("vmem", "isyn", "irec", "iahp"), forward_op="ahp_synaptic_forward_op",
    reference="synaptic_evolve_reference", call_reference=_ahp_synaptic_reference,
    check_tensors=check_ahp_synaptic_tensors,
)
# Its leaks alpha and beta given as decays (tau_ahp stays a time constant, as in Rockpool).
AHP_SYNAPTIC_DECAYS = AHP_SYNAPTIC._replace(
    params=("alpha", "beta", "threshold", "bias", "w_rec", "w_ahp", "tau_ahp"), positive=("threshold", "tau_ahp"),
    checked=("alpha", "beta", "threshold", "bias", "w_ahp", "tau_ahp"),
    call_reference=partial(_ahp_synaptic_reference, decays=True),
    check_tensors=partial(check_ahp_synaptic_tensors, leak=("alpha", "beta")), decays=("alpha", "beta"),
)

ADAPTIVE = Model(
    initial=("v0", "b0"), state=("vmem", "adapt"), params=("tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt"),
    positive=("tau_mem", "threshold", "tau_adapt"), checked=("tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt"),
    records=("vmem", "adapt"), forward_op="adaptive_forward_op", reference="adaptive_evolve_reference",
    call_reference=_adaptive_reference, check_tensors=check_adaptive_tensors,
)


def fused_available(device) -> bool:
    """Whether the fused kernels exist for this device (a torch.device, or "cpu"/"cuda")."""
    return _ext.available(torch.device(device).type)


def resolve_backend(backend, device, spike_generation_fn=StepPWL, kernel_id=None) -> str:
    """Returns "fused" or "reference" for a call on `device`; warns once when falling back.
    `kernel_id`: spike_generation_fn's kernel id if already known (surrogates.kernel_id_of)."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if kernel_id is None:
        kernel_id = kernel_id_of(spike_generation_fn)
    if kernel_id == NO_KERNEL:
        check_spike_fn(spike_generation_fn)
    if backend == "reference":
        return "reference"
    if kernel_id == NO_KERNEL:
        name = getattr(spike_generation_fn, "__name__", repr(spike_generation_fn))
        if backend == "fused":
            raise ValueError(
                f"backend='fused' but spike_generation_fn={name} has no fused kernel (only {FUSED_NAMES} "
                "do): use backend='auto' or 'reference'"
            )
        _ext.warn_once(
            ("surrogate", name),
            f"lif_cuda: spike_generation_fn={name} has no fused kernel (only {FUSED_NAMES} do); running the "
            "pure-PyTorch reference path",
        )
        return "reference"
    dev = torch.device(device)
    if fused_available(dev):
        return "fused"
    why = (
        _ext.load_failure()
        if not _ext.loaded()
        else f"the extension was built without {dev.type.upper()} kernels"
    )
    if backend == "fused":
        raise RuntimeError(f"lif_cuda: backend='fused' requested for {dev.type} but {why}")
    _ext.warn_once(("fallback", dev.type), f"lif_cuda: {why}; using the pure-PyTorch reference on {dev.type}")
    return "reference"


def param_values(model, params):
    """(name, tensor, positive) of the parameters whose values SPEC §6 restricts."""
    named = dict(zip(model.params, params))
    return [(name, named[name], DECAY if name in model.decays else name in model.positive) for name in model.checked]


def run(model, which, device, x, state, params, noise, noise_scale, dt, window, max_spikes, spike_fn, kernel_id,
        record, lengths):
    """One call of `model` on backend `which` for input `x` on `device` (x.device, read once by the
    caller), its arguments checked (the fused op checks its own): the op's leading
    outputs, (spikes, *records, *final state). `noise_scale` > 0: in-kernel noise, whose key (seed,
    offset) the op draws from torch's default CPU generator, whatever the device; the reference
    draws the same stream (lif_cuda.noise)."""
    if which == "fused":
        if device != _CPU:  # on the CPU the op checks the values itself, for free
            CHECKED_VALUES.check(param_values(model, params))
        return getattr(_this, model.forward_op)(
            x, *state, *params, noise, None, dt, noise_scale, window, max_spikes, kernel_id, record, False, lengths,
            decays=bool(model.decays),
        )
    model.check_tensors(x, state, params, noise)  # what the op would check, for a module's tensors too
    values = param_values(model, params)
    if device == _CPU:
        check_param_values(values)
    else:
        CHECKED_VALUES.check(values)
    if noise_scale > 0:
        shape = (x.shape[0], x.shape[1], state[0].shape[-1])
        noise = kernel_noise(shape, noise_scale, draw_noise_key(), compute_dtype(x.dtype), device)
    return model.call_reference(
        getattr(_this, model.reference), x, state, params, dt, noise, window, max_spikes, spike_fn, record, lengths
    )


def _checked_call(model, input, state, params, dt, noise, learning_window, max_spikes_per_dt, spike_generation_fn,
                  record, backend, noise_std, lengths):
    """The functional API's part of a call: Python types and numbers, the backend, the dtypes."""
    for name, t in zip(("input", *model.initial, *model.params, "noise"), (input, *state, *params, noise)):
        if t is not None and not isinstance(t, torch.Tensor):
            check_tensor_type(name, t)
    dt = check_scalar("dt", dt, positive=True)
    window = check_scalar("learning_window", learning_window, nonneg=True)
    max_spikes = check_max_spikes(max_spikes_per_dt, compute_dtype(input.dtype))
    noise_std = check_scalar("noise_std", noise_std, nonneg=True)
    if noise is not None and noise_std > 0:
        raise ValueError("give either a noise tensor or noise_std > 0, not both")
    kernel_id = kernel_id_of(spike_generation_fn)
    device = input.device
    which = resolve_backend(backend, device, spike_generation_fn, kernel_id)
    B, T = (input.shape[0], input.shape[1]) if input.dim() == 3 else (None, None)
    lengths = to_lengths(lengths, B, T, device, checked_by_op=which == "fused" and device.type == "cpu")
    # The state and the parameters in the compute dtype; other dtypes are the op's to refuse.
    dtype = compute_dtype(input.dtype)
    state, params = ([t if t is None or t.dtype == dtype or t.dtype not in _FLOATS else t.to(dtype) for t in ts]
                     for ts in (state, params))
    if noise is not None and noise.dtype != dtype and noise.is_floating_point():
        noise = noise.to(dtype)
    noise_scale = kernel_noise_scale(noise_std, dt)
    return run(model, which, device, input, state, params, noise, noise_scale, dt, window, max_spikes,
               spike_generation_fn, kernel_id, record, lengths)


def _leak_model(leak_mode, taus, decays):
    if leak_mode == "taus":
        return taus
    if leak_mode == "decays":
        return decays
    raise ValueError(f"leak_mode must be one of {LEAK_MODES}, got {leak_mode!r}")


def lif_evolve(input, v0, tau_mem, threshold, bias, dt, noise=None, learning_window=0.5, max_spikes_per_dt=2.0**16,
               spike_generation_fn=StepPWL, record=False, backend="auto", noise_std=0.0, lengths=None,
               leak_mode="taus"):
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
    leak_mode: "taus" (default), or "decays": `tau_mem` then holds the decay alpha = exp(-dt/tau_mem)
    itself, in [0, 1] (errors name it alpha), used as it is, and its gradient is dL/dalpha
    (Rockpool's leak_mode "decays").
    Returns (spikes (B,T,N), vmem (B,T,N) post-reset or None unless record, final state (B,N)).
    Differentiable w.r.t. input, v0, tau_mem, threshold, bias (and noise).
    """
    model = _leak_model(leak_mode, LIF, LIF_DECAYS)
    spikes, vmem, v_final = _checked_call(
        model, input, (v0,), (tau_mem, threshold, bias), dt, noise, learning_window, max_spikes_per_dt,
        spike_generation_fn, record, backend, noise_std, lengths,
    )[:3]
    return spikes, (vmem if record else None), v_final


def synaptic_evolve(input, v0, i0, tau_mem, tau_syn, threshold, bias, dt, w_rec=None, s0=None, noise=None,
                    learning_window=0.5, max_spikes_per_dt=2.0**16, spike_generation_fn=StepPWL, record=False,
                    backend="auto", noise_std=0.0, lengths=None, leak_mode="taus"):
    """Evolve LIF neurons with synaptic currents (SPEC §7) over `input` (B,T,N*S).

    i0 (B,N,S) or (N,S) (it gives N and S); v0 (B,N) or (N,); s0 (B,N), (N,) or None (zeros): the
    spikes of the step before the first, the recurrent product's first input; tau_mem, threshold,
    bias (N,) or (); tau_syn (N,S), (1,S) or (); w_rec (N, N*S) or None. Noise as lif_evolve's: an
    explicit (B,T,N) tensor, or noise_std > 0 drawn inside the kernel (Philox, torch's seed).
    Returns (spikes (B,T,N), vmem (B,T,N), isyn (B,T,N,S), irec (B,T,N,S) (records: None unless
    record), final membrane (B,N), final currents (B,N,S), final spikes (B,N)). Differentiable with
    respect to input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec (and noise).
    Variable lengths (SPEC §8): `lengths`, B integers (an integer tensor (B,) on the input's device
    or the CPU, or a list), 0 <= lengths[b] <= T: row b runs its first lengths[b] steps, exactly as
    that row alone would; later steps are padding: no spikes, the recorded membrane and currents hold
    their last values, the recorded recurrent current is 0, zero input gradient, nothing added to the
    parameter gradients (w_rec's included), and gradients arriving there are ignored. The final state
    (membrane, currents, last spikes) is the state after lengths[b] steps.
    leak_mode: "taus" (default), or "decays": `tau_mem` and `tau_syn` then hold the decays alpha =
    exp(-dt/tau_mem) and beta = exp(-dt/tau_syn) themselves, in [0, 1] (errors name them alpha and
    beta), used as they are, and their gradients are dL/dalpha and dL/dbeta (Rockpool's leak_mode
    "decays").
    """
    model = _leak_model(leak_mode, SYNAPTIC, SYNAPTIC_DECAYS)
    spikes, vmem, isyn, irec, v_final, i_final, s_final = _checked_call(
        model, input, (v0, i0, s0), (tau_mem, tau_syn, threshold, bias, w_rec), dt, noise, learning_window,
        max_spikes_per_dt, spike_generation_fn, record, backend, noise_std, lengths,
    )[:7]
    if not record:
        vmem = isyn = irec = None
    return spikes, vmem, isyn, irec, v_final, i_final, s_final


def ahp_synaptic_evolve(input, v0, i0, h0, tau_mem, tau_syn, threshold, bias, w_ahp, tau_ahp, dt, w_rec=None, s0=None,
                        noise=None, learning_window=0.5, max_spikes_per_dt=2.0**16, spike_generation_fn=StepPWL,
                        record=False, backend="auto", noise_std=0.0, lengths=None, leak_mode="taus"):
    """synaptic_evolve with an after-hyperpolarisation current (SPEC §9, Rockpool's aLIFTorch).

    h0 (B,N) or (N,): the AHP current before the first step; w_ahp (N,) or (); tau_ahp (N,), (1,) or
    (). Each step, after the synapses: h = (h + s_prev * w_ahp) * exp(-dt/tau_ahp), s_prev the
    previous step's spikes (s0, or zeros, at the first), and the membrane adds the sum of the S + 1 currents
    [i..., h] in torch.sum's order. The other arguments, lengths and noise as synaptic_evolve's.
    Returns (spikes, vmem, isyn, irec, iahp (B,T,N) (records: None unless record), final membrane
    (B,N), final currents (B,N,S), final spikes (B,N), final h (B,N)). Differentiable with respect
    to input, v0, i0, s0, h0, tau_mem, tau_syn, threshold, bias, w_rec, w_ahp, tau_ahp (and noise).
    leak_mode: as synaptic_evolve's ("decays": tau_mem and tau_syn hold alpha and beta); tau_ahp is a
    time constant in both.
    """
    model = _leak_model(leak_mode, AHP_SYNAPTIC, AHP_SYNAPTIC_DECAYS)
    if isinstance(tau_ahp, torch.Tensor) and tuple(tau_ahp.shape) == (1,):
        tau_ahp = tau_ahp.reshape(())  # Rockpool's (1,): one time constant for every neuron (SPEC §9)
    out = _checked_call(
        model, input, (v0, i0, s0, h0), (tau_mem, tau_syn, threshold, bias, w_rec, w_ahp, tau_ahp), dt, noise,
        learning_window, max_spikes_per_dt, spike_generation_fn, record, backend, noise_std, lengths,
    )[:9]
    spikes, vmem, isyn, irec, iahp, v_final, i_final, s_final, h_final = out
    if not record:
        vmem = isyn = irec = iahp = None
    return spikes, vmem, isyn, irec, iahp, v_final, i_final, s_final, h_final


def adaptive_evolve(input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt, dt, noise=None,
                    learning_window=0.5, max_spikes_per_dt=2.0**16, spike_generation_fn=StepPWL, record=False,
                    backend="auto", noise_std=0.0, lengths=None):
    """Evolve adaptive-threshold LIF neurons (SPEC §10) over `input` (B,T,N) from membrane `v0` and
    adaptation `b0` ((B,N) or (N,) each).

    tau_mem, threshold, bias, tau_adapt, beta_adapt: (N,) or (). Each step the threshold is
    A = threshold + beta_adapt * b; each spike raises b by (1 - rho), which decays by
    rho = exp(-dt / tau_adapt). Noise, dtypes and `lengths` as lif_evolve's.
    Returns (spikes (B,T,N), vmem (B,T,N), adapt (B,T,N) (records, None unless record), final
    membrane (B,N), final adaptation (B,N)). Differentiable with respect to input, v0, b0 and every
    parameter (and noise).
    """
    spikes, vmem, adapt, v_final, b_final = _checked_call(
        ADAPTIVE, input, (v0, b0), (tau_mem, threshold, bias, tau_adapt, beta_adapt), dt, noise, learning_window,
        max_spikes_per_dt, spike_generation_fn, record, backend, noise_std, lengths,
    )[:5]
    if not record:
        vmem = adapt = None
    return spikes, vmem, adapt, v_final, b_final
