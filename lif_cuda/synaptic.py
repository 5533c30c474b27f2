"""LIF neurons with synaptic currents and optional recurrent weights (SPEC §7, Rockpool's LIFTorch).

    import lif_cuda
    layer = lif_cuda.SynapticLIF((2 * 64, 64), tau_mem=0.02, tau_syn=0.005, has_rec=True)
    spikes = layer(x)                         # x (B, T, 128): two synapses per neuron

`synaptic_evolve(...)` is the functional form (the state is the caller's); `SynapticLIF` the module.
Both run the fused op (lif_cuda::synaptic_forward: the whole feed-forward time loop in one kernel;
with recurrent weights a C++ time loop of ATen's `linear` and the fused step kernel) or the
pure-PyTorch reference (lif_cuda.reference.synaptic_evolve_reference), with the backends, noise
modes, half-precision input and the errors of LIFNeuron.
"""
import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ._checks import (
    CHECKED_VALUES,
    check_float_tensor,
    check_lengths,
    check_param,
    check_reference_values,
    check_step_settings,
    compute_dtype,
    param_values,
)
from .functional import resolve_backend, surrogate_id
from .module import LIFNeuron, _init_param, apply_keeping_float32, kept_state, scripted_lengths
from .noise import draw_noise_key, kernel_noise, torch_noise
from .ops import synaptic_forward_op
from .reference import StepPWL, synaptic_evolve_reference

__all__ = ["SynapticLIF", "synaptic_evolve"]

_HALF = (torch.float16, torch.bfloat16)


def _check_state(name, t, shapes, device):
    check_float_tensor(name, t)
    if tuple(t.shape) not in shapes:
        raise ValueError(f"{name} must have shape {' or '.join(map(str, shapes))}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the input is on {device}: put both on one device")


def check_tau_syn(t, n, s, device=None):
    """tau_syn: (N,S), (1,S) or () (Rockpool's shapes), floating, on `device`."""
    check_float_tensor("tau_syn", t)
    if tuple(t.shape) not in ((n, s), (1, s), ()):
        raise ValueError(f"tau_syn must have shape ({n}, {s}), (1, {s}) or (), got {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"tau_syn is on {t.device} but the input is on {device}: put both on one device")


def check_w_rec(w, n, s, device=None):
    check_float_tensor("w_rec", w)
    if tuple(w.shape) != (n, n * s):
        raise ValueError(f"w_rec must have shape (N, N*S) = ({n}, {n * s}), got {tuple(w.shape)}")
    if device is not None and w.device != device:
        raise ValueError(f"w_rec is on {w.device} but the input is on {device}: put both on one device")


def check_synaptic_args(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, dt, noise, learning_window,
                        max_spikes_per_dt, noise_std):
    """The functional API's checks but the parameters' values; returns (N, S, dt, window, max_spikes,
    noise_std)."""
    check_float_tensor("input", input, allow_half=True)
    if input.dim() != 3:
        raise ValueError(f"input must have shape (B, T, N*S), got {tuple(input.shape)}")
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
    check_param("tau_mem", tau_mem, N, dev, positive=True)
    check_tau_syn(tau_syn, N, S, dev)
    check_param("threshold", threshold, N, dev, positive=True)
    check_param("bias", bias, N, dev, positive=False)
    if w_rec is not None:
        check_w_rec(w_rec, N, S, dev)
    _check_state("v0", v0, ((N,), (B, N)), dev)
    _check_state("i0", i0, ((N, S), (B, N, S)), dev)
    if s0 is not None:
        _check_state("s0", s0, ((N,), (B, N)), dev)
    dt, window, max_spikes, noise_std = check_step_settings(
        input, noise, (B, T, N), dt, learning_window, max_spikes_per_dt, noise_std
    )
    return N, S, dt, window, max_spikes, noise_std


def _values(tau_mem, tau_syn, threshold, bias):
    return param_values(tau_mem, threshold, bias) + [("tau_syn", tau_syn, True)]


def synaptic_evolve(
    input,
    v0,
    i0,
    tau_mem,
    tau_syn,
    threshold,
    bias,
    dt,
    w_rec=None,
    s0=None,
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
    """
    N, S, dt, window, max_spikes, noise_std = check_synaptic_args(
        input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, dt, noise, learning_window, max_spikes_per_dt,
        noise_std,
    )
    if _surrogate is None:
        _surrogate = surrogate_id(spike_generation_fn)
    which = resolve_backend(backend, input.device, spike_generation_fn, _surrogate)
    # The fused CPU op checks the values of CPU lengths itself (C++, no dispatch).
    lengths = check_lengths(lengths, input.shape[0], input.shape[1], input.device,
                            values=which == "reference" or input.device.type != "cpu")
    noise_scale = noise_std * math.sqrt(dt) if noise is None and noise_std > 0 else 0.0
    dtype = compute_dtype(input.dtype)
    if which == "reference":
        check_reference_values(input.device, _values(tau_mem, tau_syn, threshold, bias))
        if noise_scale > 0:
            B, T = input.shape[:2]
            noise = kernel_noise((B, T, N), noise_scale, draw_noise_key(), dtype, input.device)
        return synaptic_evolve_reference(
            input, v0, i0, tau_mem, tau_syn, threshold, bias, dt, w_rec=w_rec, s0=s0, noise=noise,
            learning_window=window, max_spikes_per_dt=max_spikes, spike_generation_fn=spike_generation_fn,
            record=record, lengths=lengths,
        )
    if input.device.type != "cpu":  # the op checks CPU values itself
        CHECKED_VALUES.check(_values(tau_mem, tau_syn, threshold, bias))
    cast = lambda t: t if t is None or t.dtype == dtype else t.to(dtype)  # noqa: E731
    out = synaptic_forward_op(
        input, cast(v0), cast(i0), cast(s0), cast(tau_mem), cast(tau_syn), cast(threshold), cast(bias), cast(w_rec),
        cast(noise), None, dt, noise_scale, window, max_spikes, _surrogate, record, False, lengths,
    )
    spikes, vmem, isyn, irec, v_final, i_final, s_final = out[:7]
    if not record:
        vmem = isyn = irec = None
    return spikes, vmem, isyn, irec, v_final, i_final, s_final


def _shape_to_ns(shape):
    """Rockpool's shape rule: (N,) or N -> N neurons, one synapse each; (N*S, N) -> S per neuron."""
    if shape is None:
        raise ValueError("shape must be given: (N,) neurons, or (N*S, N) for S synapses per neuron")
    if np.size(shape) == 1:
        shape = (np.array(shape).item(),) * 2
    if np.size(shape) != 2:
        raise ValueError(f"shape must be (N,) or (N*S, N), got {shape}")
    n_in, n = (np.array(shape).reshape(-1)).tolist()
    for v in (n_in, n):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
            raise ValueError(f"shape must hold whole, non-negative numbers, got {shape!r}")
    n_in, n = int(n_in), int(n)
    if n == 0:
        return 0, max(n_in, 1)
    if n_in < n or n_in % n:
        raise ValueError(f"shape (N_in, N) = {shape} needs N_in to be a multiple S >= 1 of N (S synapses per neuron)")
    return n, n_in // n


def _init_tau_syn(value, n, s):
    if value is None:
        return torch.full((n, s), 20e-3)
    try:
        t = torch.as_tensor(value).detach().clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"tau_syn must be a real number or a float tensor, got {value!r}") from exc
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"tau_syn must be a real number or a float tensor, got {t.dtype}")
    t = t.to(torch.float32)
    check_tau_syn(t, n, s)
    if not bool((torch.isfinite(t) & (t > 0)).all()):
        raise ValueError(f"tau_syn must be finite and > 0 everywhere, got {t}")
    return t


class SynapticLIF(nn.Module):
    """Leaky integrate-and-fire neurons with S synaptic currents each and optional recurrent weights:
    Rockpool's LIFTorch (leak_mode "taus") on the fused kernels (SPEC §7).

    Per step: i += x[t] (+ linear(s, w_rec.T)); i *= exp(-dt/tau_syn); v = v * exp(-dt/tau_mem) +
    sum_k i + noise + bias; s = min(floor(v / thr), M) where v >= thr; v -= s * thr. Input (B,T,N*S)
    or (T,N*S) or (..., 1) broadcast; output spikes (B,T,N). State `vmem` (N,), `isyn` (N,S),
    `spikes` (N,): batch row 0 after each call, detached (as Rockpool keeps it).

    batch_state=True (SPEC §8): the state is every row's, vmem (B,N), isyn (B,N,S), spikes (B,N)
    (the last spikes, the recurrent product's first input), detached, and each row of the next call
    continues from its own (two chunks give one run's bits; the gradient is cut between them); the
    next call must have the same B (a ValueError says so) until reset_state(). lengths
    (forward/evolve): B integers 0 <= lengths[b] <= T; row b runs its first lengths[b] steps, the rest
    is padding (no spikes, state held, no gradient; see synaptic_evolve), and the state kept is each
    row's state at its length.

    shape: (N,) or N (one synapse per neuron), or (N*S, N). has_rec: a trainable (N, N*S) w_rec
    (`w_rec` its initial value, else `weight_init_func((N, N*S))`, default Kaiming uniform).
    noise: with noise_std > 0, "kernel" (drawn in the kernel) or "torch" (torch.randn, as Rockpool).
    backend: "auto", "fused" or "reference", as LIFNeuron's.
    """

    # LIFNeuron's resolution of the spike function, configuration checks and per-change cache.
    spike_generation_fn = LIFNeuron.spike_generation_fn
    _init_config = LIFNeuron._init_config
    _check_config = LIFNeuron._check_config
    _call_config = LIFNeuron._call_config
    # ... and its per-row state (batch_state, SPEC §8): reset, the batch-size check, checkpoints.
    reset_state = LIFNeuron.reset_state
    _check_state = LIFNeuron._check_state
    _auto_batch = LIFNeuron._auto_batch
    _load_from_state_dict = LIFNeuron._load_from_state_dict
    __jit_unused_properties__ = ["spike_generation_fn"]
    __jit_ignored_attributes__ = ["_config_cache"]

    def __init__(
        self,
        shape=None,
        tau_mem=None,
        tau_syn=None,
        threshold=None,
        bias=0.0,
        has_rec=False,
        w_rec=None,
        dt=1e-3,
        noise_std=0.0,
        spike_generation_fn=StepPWL,
        learning_window=0.5,
        max_spikes_per_dt=2.0**16,
        weight_init_func=None,
        backend="auto",
        noise="kernel",
        batch_state=False,
    ):
        super().__init__()
        n, s = _shape_to_ns(shape)
        self.n_neurons = self.size_out = n
        self.n_synapses = s
        self.size_in = n * s
        self.shape = (n * s, n)
        self.tau_mem = nn.Parameter(_init_param("tau_mem", tau_mem, n, 20e-3, positive=True))
        self.tau_syn = nn.Parameter(_init_tau_syn(tau_syn, n, s))
        self.threshold = nn.Parameter(_init_param("threshold", threshold, n, 1.0, positive=True))
        self.bias = nn.Parameter(_init_param("bias", bias, n, 0.0, positive=False))
        if not isinstance(has_rec, (bool, np.bool_)):
            raise TypeError(f"has_rec must be True or False, got {has_rec!r}")
        self.has_rec = bool(has_rec)
        if self.has_rec:
            if w_rec is None:
                init = weight_init_func or (lambda sh: nn.init.kaiming_uniform_(torch.empty(sh)))
                w_rec = init((n, n * s))
            w = torch.as_tensor(w_rec).detach().clone().to(torch.float32)
            check_w_rec(w, n, s)
            self.w_rec = nn.Parameter(w)
        else:
            if w_rec is not None:
                raise ValueError("w_rec may not be provided if has_rec is False")
            self.w_rec = None
        self.register_buffer("vmem", torch.zeros(n))
        self.register_buffer("isyn", torch.zeros(n, s))
        self.register_buffer("spikes", torch.zeros(n))
        self._init_config(
            dt, noise_std, learning_window, max_spikes_per_dt, spike_generation_fn, backend, noise, batch_state
        )
        self._config_cache = None

    def extra_repr(self):
        return (
            f"shape={self.shape}, n_synapses={self.n_synapses}, has_rec={self.has_rec}, dt={self.dt}, "
            f"noise_std={self.noise_std}, learning_window={self.learning_window}, "
            f"max_spikes_per_dt={self.max_spikes_per_dt}, "
            f"spike_generation_fn={getattr(self.spike_generation_fn, '__name__', self.spike_generation_fn)}, "
            f"backend={self.backend!r}, noise={self.noise!r}, batch_state={self.batch_state}"
        )

    _FLOAT32_TENSORS = ("tau_mem", "tau_syn", "threshold", "bias", "w_rec", "vmem", "isyn", "spikes")

    def _apply(self, fn, recurse=True):
        return apply_keeping_float32(self, super()._apply, fn, recurse)

    def _state_rows(self):
        return {"vmem": (self.n_neurons,), "isyn": (self.n_neurons, self.n_synapses), "spikes": (self.n_neurons,)}

    def _keep_state(self, v_final: torch.Tensor, i_final: torch.Tensor, s_final: torch.Tensor, B: int):
        """After a successful call: the state the next call starts from (module.kept_state)."""
        if B == 0:
            return
        v = kept_state(self.vmem, v_final, self.batch_state)
        i = kept_state(self.isyn, i_final, self.batch_state)
        s = kept_state(self.spikes, s_final, self.batch_state)
        # The first call after reset_state(): the state becomes per-row.
        if v is not None:
            self.vmem = v
        if i is not None:
            self.isyn = i
        if s is not None:
            self.spikes = s

    # Eager only: TorchScript sees a stub (forward takes _forward_scripted when scripting).
    @torch.jit.unused
    def _evolve(self, x: torch.Tensor, record: bool, lengths=None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        x = self._auto_batch(x)
        tau = self.tau_mem
        dtype = tau.dtype
        if x.dtype != dtype and not (dtype == torch.float32 and x.dtype in _HALF):
            x = x.to(dtype)
        if x.device != tau.device:
            check_param("tau_mem", tau, self.n_neurons, x.device, positive=True)  # names the devices
        dt, window, max_spikes, noise_std, which = self._call_config(x.device)
        B, T = x.shape[0], x.shape[1]
        self._check_state(B)
        # The fused CPU op checks the values of CPU lengths itself.
        lengths = check_lengths(lengths, B, T, x.device, values=which == "reference" or x.device.type != "cpu")
        noise = None
        noise_scale = 0.0
        if noise_std > 0:
            if self.noise == "torch":
                noise = torch_noise(noise_std, dt, [B, T, self.n_neurons], dtype, x.device)
            else:
                noise_scale = noise_std * math.sqrt(dt)
        params = (self.tau_mem, self.tau_syn, self.threshold, self.bias)
        if which == "fused":
            if x.device.type != "cpu":
                CHECKED_VALUES.check(_values(*params))
            # The state itself is v0/i0/s0 (the op copies what its backward needs).
            out = synaptic_forward_op(
                x, self.vmem, self.isyn, self.spikes, *params, self.w_rec, noise, None, dt, noise_scale, window,
                max_spikes, self._surrogate_id, record, False, lengths,
            )
            spikes, vmem, isyn, irec, v_final, i_final, s_final = out[:7]
        else:
            if noise_scale > 0:
                noise = kernel_noise((B, T, self.n_neurons), noise_scale, draw_noise_key(), compute_dtype(x.dtype),
                                     x.device)
            snap = lambda t: t.to(device=x.device, dtype=dtype, copy=True)  # noqa: E731
            spikes, vmem, isyn, irec, v_final, i_final, s_final = synaptic_evolve(
                x, snap(self.vmem), snap(self.isyn), *params, dt, w_rec=self.w_rec, s0=snap(self.spikes), noise=noise,
                learning_window=window, max_spikes_per_dt=max_spikes, spike_generation_fn=self._spike_generation_fn,
                record=record, backend="reference", _surrogate=self._surrogate_id, lengths=lengths,
            )
        self._keep_state(v_final, i_final, s_final, B)  # only after success
        rec = {"vmem": vmem, "isyn": isyn, "irec": irec, "spikes": spikes} if record else {}
        return spikes, rec

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spikes (B,T,N) for input (B,T,N*S), (T,N*S) or (..., 1) broadcast over the synapses;
        `lengths`: B integers (a list, or an integer tensor), row b runs its first lengths[b] steps."""
        if torch.jit.is_scripting():
            return self._forward_scripted(x, lengths)
        return self._evolve(x, False, lengths)[0]

    def _forward_scripted(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The forward under torch.jit.script, for inference: the fused op called directly, as
        _evolve's fused branch calls it (the same values bit for bit)."""
        n_in = self.size_in
        if self._surrogate_id != 0 and self._surrogate_id != 1:
            raise RuntimeError("SynapticLIF: a scripted layer runs the fused op, which implements only "
                               "StepPWL and PeriodicExponential (run this layer in eager mode)")
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or (x.shape[-1] != n_in and x.shape[-1] != 1):
            raise ValueError("SynapticLIF: input must have shape (B, T, N*S) or (T, N*S), or a last dimension of 1")
        x = x.expand(x.shape[0], x.shape[1], n_in)
        dtype = self.tau_mem.dtype
        half = x.dtype == torch.float16 or x.dtype == torch.bfloat16
        if x.dtype != dtype and not (dtype == torch.float32 and half):
            x = x.to(dtype)
        B, T = x.shape[0], x.shape[1]
        self._check_state(B)
        lengths = scripted_lengths(lengths, x.device)
        noise: Optional[torch.Tensor] = None
        noise_scale = 0.0
        if self.noise_std > 0 and self.noise == "torch":
            noise = torch_noise(self.noise_std, self.dt, [B, T, self.n_neurons], dtype, x.device)
        elif self.noise_std > 0:
            noise_scale = self.noise_std * math.sqrt(self.dt)
        out = torch.ops.lif_cuda.synaptic_forward(
            x, self.vmem, self.isyn, self.spikes, self.tau_mem, self.tau_syn, self.threshold, self.bias, self.w_rec,
            noise, None, self.dt, noise_scale, self.learning_window, self.max_spikes_per_dt, 0, False, False,
            lengths,
        )
        self._keep_state(out[4], out[5], out[6], B)
        return out[0]

    def evolve(self, x, record=False, lengths=None):
        """Returns (spikes, state, record_dict): state {"vmem", "isyn", "spikes"}; record_dict (when
        record) {"vmem" (B,T,N), "isyn" (B,T,N,S), "irec" (B,T,N,S), "spikes" (B,T,N)}. `lengths`: as
        for forward."""
        spikes, rec = self._evolve(x, record=record, lengths=lengths)
        state = {"vmem": self.vmem.clone(), "isyn": self.isyn.clone(), "spikes": self.spikes.clone()}
        return spikes, state, rec
