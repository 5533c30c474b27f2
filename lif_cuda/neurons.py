"""The neuron modules: `LIFNeuron` (SPEC §5, Rockpool's LIFNeuronTorch), `SynapticLIF` (SPEC §7,
Rockpool's LIFTorch) and `AdaptiveLIF` (SPEC §10), thin faces on one base class.

`NeuronLayer` holds what every model shares: the settings and their checks, the state (kept per row
with batch_state, SPEC §8), auto-batching, dtypes (half precision in and out, float32 inside), the
backend choice, records, checkpoints and the TorchScript prologue. A model declares its state,
parameters and op (`model`, a lif_cuda.functional.Model), builds its parameters, and writes the one
scripted op call TorchScript needs spelt out.
"""
import math
from typing import List, Optional

import numpy as np
import torch
from torch import nn

from . import functional
from ._checks import DECAY, check_max_spikes, check_scalar, check_w_rec, to_lengths
from .noise import kernel_noise_scale, torch_noise
from .surrogates import StepPWL, check_spike_fn, kernel_id_of

__all__ = ["NeuronLayer", "LIFNeuron", "SynapticLIF", "AHPSynapticLIF", "AdaptiveLIF"]

_HALF = (torch.float16, torch.bfloat16)
_IO_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def kept_state(state: torch.Tensor, final: torch.Tensor, batch_state: bool) -> torch.Tensor:
    """One state tensor after a successful call of batch size > 0 (SPEC §5, §8), detached (the
    gradient is cut between calls; detach, not a no_grad block: torch.export could not load a
    program saved with one): batch row 0 of `final` copied into `state` (batch_state False, the
    seed's behaviour), or every row; in place where the shapes agree. Returns the state to keep:
    `state` itself, or the new (B, ...) state of the first call after reset_state()."""
    if not batch_state:
        state.copy_(final[0].detach())
        return state
    if state.dim() == final.dim():
        state.copy_(final.detach())
        return state
    return final.detach().clone()


def scripted_lengths(lengths: Optional[torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
    """lengths for the op under TorchScript (no Python checks there): an integer tensor, moved to the
    input's device as int64. The op checks the shape, and the values of a CPU tensor."""
    if lengths is None:
        return None
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError("lengths must be an integer tensor")
    return lengths.to(device=device, dtype=torch.long)


def _as_param(name, value, shape_ok, shape_text, default, positive):
    """A constructor's parameter value as a float32 tensor, checked as every call checks it (SPEC §6),
    so that a bad module is never built."""
    if value is None:
        return default()
    try:
        t = torch.as_tensor(value).detach().clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a real number or a float tensor, got {value!r}") from exc
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a real number or a float tensor, got {t.dtype}")
    t = t.to(torch.float32)
    if not shape_ok(tuple(t.shape)):
        raise ValueError(f"{name} must have shape {shape_text}, got {tuple(t.shape)}")
    if positive == DECAY:
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"{name} must be in [0, 1] everywhere, got {t}")
    elif not bool((torch.isfinite(t) & ((t > 0) if positive else True)).all()):
        raise ValueError(f"{name} must be finite{' and > 0' if positive else ''} everywhere, got {t}")
    return t


def _neuron_param(name, value, n, default, positive):
    """A per-neuron parameter: (N,) or (), `default` for every neuron when not given."""
    return nn.Parameter(_as_param(name, value, lambda s: s in ((n,), ()), f"({n},) or ()",
                                  lambda: torch.full((n,), float(default)), positive))


LEAK_MODES = ("taus", "decays")
_LEAK_NAMES = {"taus": ("tau_mem", "tau_syn"), "decays": ("alpha", "beta")}
DEFAULT_TAU = 20e-3


def _leak_mode(leak_mode, dt, **given):
    """The leak mode, checked against the leak arguments given (only its own family's, as Rockpool
    rules), and the default decay: that of the default time constant, as torch computes it, so that
    "taus" and "decays" layers built with defaults are the same model."""
    if leak_mode not in LEAK_MODES:
        raise ValueError(f"leak_mode must be one of {LEAK_MODES}, got {leak_mode!r}")
    for name, value in given.items():
        if value is not None and name not in _LEAK_NAMES[leak_mode]:
            raise ValueError(
                f"{name} is a parameter of another leak_mode than leak_mode={leak_mode!r}, whose leak parameters are "
                f"{' and '.join(k for k in given if k in _LEAK_NAMES[leak_mode])}"
            )
    if leak_mode == "taus":
        return None
    dt = check_scalar("dt", dt, positive=True)
    return torch.exp(-dt / torch.tensor(DEFAULT_TAU)).item()


class NeuronLayer(nn.Module):
    """The base of the neuron modules; a subclass sets `model` and builds its parameters and state
    buffers (named as model.params and model.state) before calling `_init_settings`."""

    model = None  # a functional.Model
    __jit_unused_properties__ = ["spike_generation_fn"]
    __jit_ignored_attributes__ = ["_config_cache", "model"]

    def _init_settings(self, dt, noise_std, learning_window, max_spikes_per_dt, spike_generation_fn, backend, noise,
                       batch_state):
        """The constructor's checks of the settings that are not parameters."""
        self.dt = check_scalar("dt", dt)
        self.noise_std = check_scalar("noise_std", noise_std)
        self.learning_window = check_scalar("learning_window", learning_window)
        if isinstance(max_spikes_per_dt, torch.Tensor) and max_spikes_per_dt.numel() == 1:
            max_spikes_per_dt = max_spikes_per_dt.item()
        if not (isinstance(max_spikes_per_dt, float) and max_spikes_per_dt == math.inf):
            max_spikes_per_dt = check_scalar("max_spikes_per_dt", max_spikes_per_dt)
        self.max_spikes_per_dt = float(max_spikes_per_dt)
        check_spike_fn(spike_generation_fn)
        self.spike_generation_fn = spike_generation_fn
        self.backend = backend
        self.noise = noise
        if not isinstance(batch_state, bool):
            raise TypeError(f"batch_state must be True or False, got {batch_state!r}")
        self.batch_state = batch_state
        self._check_settings()
        self._config_cache = None  # see _configure

    @property
    def spike_generation_fn(self):
        return self._spike_generation_fn

    @spike_generation_fn.setter
    def spike_generation_fn(self, fn):
        # Resolved here, outside any torch.compile trace; an int always (TorchScript types the
        # attribute). A bad value counts as NO_KERNEL here and is named by a TypeError at the next call.
        self._spike_generation_fn = fn
        self._spike_fn_version = getattr(self, "_spike_fn_version", 0) + 1  # a key of _configure
        self._kernel_id = kernel_id_of(fn)

    def _check_settings(self):
        for name, positive in (("dt", True), ("noise_std", False), ("learning_window", False)):
            v = getattr(self, name)
            if not math.isfinite(v) or (v <= 0 if positive else v < 0):
                raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {v}")
        if not self.max_spikes_per_dt >= 1:
            raise ValueError(f"max_spikes_per_dt must be >= 1, got {self.max_spikes_per_dt}")
        if self.noise not in ("kernel", "torch"):
            raise ValueError(
                "noise must be 'kernel' (drawn in the fused kernel) or 'torch' (a torch.randn tensor), "
                f"got {self.noise!r}"
            )
        if self.backend not in ("auto", "fused", "reference"):
            raise ValueError(f"backend must be 'auto', 'fused' or 'reference', got {self.backend!r}")

    def _configure(self, device, key):
        """(dt, window, max_spikes, noise_std, noise_scale, backend) for calls on `device`: the settings
        checked (SPEC §6) and the backend resolved once per change of any of them (`key`), not per call.
        A module on another device than its input is named here, before the backend is chosen for the
        input's device (later calls: the op names it)."""
        leak = self.model.params[0]  # tau_mem, or the decay alpha
        tau = self._parameters[leak]
        if device != tau.device:
            raise ValueError(f"{leak} is on {tau.device} but the input is on {device}: put both on one device")
        dt = check_scalar("dt", self.dt, positive=True)
        window = check_scalar("learning_window", self.learning_window, nonneg=True)
        max_spikes = check_max_spikes(self.max_spikes_per_dt, tau.dtype)
        noise_std = check_scalar("noise_std", self.noise_std, nonneg=True)
        if self.noise not in ("kernel", "torch"):
            self._check_settings()  # names it
        which = functional.resolve_backend(self.backend, device, self._spike_generation_fn, self._kernel_id)
        noise_scale = kernel_noise_scale(noise_std, dt) if self.noise == "kernel" else 0.0
        self._config_cache = (key, (dt, window, max_spikes, noise_std, noise_scale, which))
        return self._config_cache

    def extra_repr(self):
        fn = getattr(self.spike_generation_fn, "__name__", self.spike_generation_fn)
        return (
            f"shape={self.shape}, {self._model_repr()}dt={self.dt}, noise_std={self.noise_std}, "
            f"learning_window={self.learning_window}, max_spikes_per_dt={self.max_spikes_per_dt}, "
            f"spike_generation_fn={fn}, backend={self.backend!r}, noise={self.noise!r}, batch_state={self.batch_state}"
        )

    def _model_repr(self):
        return ""

    def _init_lif(self, shape, tau_mem, threshold, bias, alpha=None, default_decay=None):
        """The LIF neuron's shape and parameters (SPEC §5), which models built on it share; returns N.
        `default_decay` given (leak_mode "decays"): the leak is the decay alpha, tau_mem None."""
        n = _n_from_shape(shape)
        self.n_neurons = self.size_in = self.size_out = n
        self.shape = (n,)
        if default_decay is None:
            self.tau_mem = _neuron_param("tau_mem", tau_mem, n, DEFAULT_TAU, positive=True)
        else:
            self.tau_mem = None
            self.alpha = _neuron_param("alpha", alpha, n, default_decay, positive=DECAY)
        self.threshold = _neuron_param("threshold", threshold, n, 1.0, positive=True)
        self.bias = _neuron_param("bias", bias, n, 0.0, positive=False)
        return n

    # ------------------------------------------------------------------ dtypes and devices

    def _apply(self, fn, recurse=True):
        """nn.Module._apply for a layer whose parameters and state stay float32 under model.half() /
        .to(torch.bfloat16): half precision is an input/output format of the kernels, the state and
        the arithmetic are float32. The float32 values are kept as they were (converting to half and
        back would round them), moved to the new device if fn moves them. The cached call settings
        are dropped: they were checked against the parameters' old device and dtype."""
        self._config_cache = None
        before = {}
        for name in (*self.model.params, *self.model.state):
            t = getattr(self, name)
            if t is not None and t.dtype == torch.float32:
                before[name] = (t.data, getattr(t, "grad", None))
                if before[name][1] is not None:
                    t.grad = None  # converted below with its tensor (torch refuses a half grad on it)
        try:
            super()._apply(fn, recurse)
        finally:
            for name, (data, grad) in before.items():
                t = getattr(self, name)
                if t.dtype in _HALF:
                    t.data = data.to(t.device)
                if grad is not None:
                    t.grad = grad.to(device=t.device, dtype=t.dtype) if grad.dtype != t.dtype else grad.to(t.device)
        return self

    # --------------------------------------------------------------- state (SPEC §5, §8)

    def _state_rows(self):
        """The state buffers and the shape of one row of each."""
        raise NotImplementedError

    def reset_state(self):
        """State back to zero: one shared row, which starts a call of any batch size."""
        with torch.no_grad():
            for name, row in self._state_rows().items():
                t = getattr(self, name)
                if tuple(t.shape) == row:
                    t.zero_()
                else:  # a per-row state (batch_state=True)
                    setattr(self, name, torch.zeros(row, dtype=t.dtype, device=t.device))
        return self

    def _check_state(self, B: int):
        """Before a call of batch size B: a per-row (B', N) state continues only B' == B rows (every
        state buffer has vmem's batch size)."""
        if self.vmem.dim() == 2:
            kept = self.vmem.shape[0]
            if not self.batch_state:
                raise ValueError(
                    "the state holds a per-row state of " + str(kept) + " rows (batch_state=True) but "
                    "batch_state is False: call reset_state() first"
                )
            if kept != B:
                raise ValueError(
                    "batch_state=True keeps the state of batch size " + str(kept) + " but this "
                    "call has batch size " + str(B) + ": call reset_state() to start a new batch"
                )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Each state buffer is one row, or (B, row) when kept per row: take the checkpoint's shape where
        # it fits.
        for name, row in self._state_rows().items():
            v, cur = state_dict.get(prefix + name), getattr(self, name)
            if not isinstance(v, torch.Tensor) or v.shape == cur.shape:
                continue
            per_row = v.dim() == len(row) + 1 and tuple(v.shape[1:]) == row
            if tuple(v.shape) == row or (self.batch_state and per_row):
                setattr(self, name, torch.zeros(v.shape, dtype=cur.dtype, device=cur.device))
            elif per_row:
                error_msgs.append(
                    f"{name}: the checkpoint holds a per-row state {tuple(v.shape)} (saved with batch_state=True) "
                    f"but this {type(self).__name__} has batch_state=False: set batch_state=True first, or save "
                    "after reset_state()"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ---------------------------------------------------------------------------- a call

    def _auto_batch(self, x):
        """(T, size_in) -> (1, T, size_in); a last dimension of 1 broadcast."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.is_complex() or not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor (float32 or float64), got {x.dtype}")
        n = self.size_in
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3:
            raise ValueError(f"input must have shape (B, T, {n}) or (T, {n}), got {tuple(x.shape)}")
        if x.shape[-1] != n:
            if x.shape[-1] == 1:
                x = x.expand(x.shape[0], x.shape[1], n)
            else:
                what = str(n) if n == self.n_neurons else f"N*S = {n}"
                raise ValueError(f"input's last dimension must be {what} (or 1), got shape {tuple(x.shape)}")
        return x

    # Eager only: TorchScript sees a stub (forward takes _forward_scripted when scripting).
    @torch.jit.unused
    def _evolve(self, x: torch.Tensor, record: bool, lengths=None) -> List[torch.Tensor]:
        """The op's outputs of one call, (spikes, *records, *final state, ...); the state kept only
        after success. Kept short: it is the hot path of every call (the settings' checks are
        cached, the op checks the tensors)."""
        x, config, lengths = self._prepare(x, lengths)
        B = x.shape[0]
        state = tuple(map(self._buffers.__getitem__, self.model.state))
        if state[0].dim() == 2:
            self._check_state(B)
        initial = state
        if config[5] == "reference":  # its autograd graph keeps the initial state: hand it a snapshot
            initial = tuple(t.to(device=x.device, dtype=self.threshold.dtype, copy=True) for t in state)
        out = self._run(x, initial, config, record, lengths)
        if B > 0:  # the new state, only after success
            self._keep_state(out[len(self.model.records) + 1:])
        return out

    @torch.jit.unused
    def _prepare(self, x, lengths):
        """(x, settings, lengths) of a call: x (B, T, size_in) in the compute dtype, the settings as
        _configure returns them (cached per change), the lengths checked."""
        if not (type(x) is torch.Tensor and x.dim() == 3 and x.shape[2] == self.size_in and x.dtype in _IO_DTYPES):
            x = self._auto_batch(x)
        dtype = self._parameters["threshold"].dtype
        # Computed in the parameters' dtype, as Rockpool does; float16/bfloat16 input stays as it is
        # (the kernels read it directly, keep the state in float32 and return spikes in its dtype).
        if x.dtype != dtype and not (dtype == torch.float32 and x.dtype in _HALF):
            x = x.to(dtype)
        device = x.device
        key = (self.dt, self.learning_window, self.max_spikes_per_dt, self.noise_std, self.noise, self.backend,
               self._spike_fn_version, device)
        config = self._config_cache
        if config is None or config[0] != key:
            config = self._configure(device, key)
        if lengths is not None:  # the fused CPU op checks them itself
            by_op = config[1][5] == "fused" and device.type == "cpu"
            lengths = to_lengths(lengths, x.shape[0], x.shape[1], device, checked_by_op=by_op)
        return x, config[1], lengths

    @torch.jit.unused
    def _call_from(self, x: torch.Tensor, initial, lengths=None) -> List[torch.Tensor]:
        """(spikes, final state) of a call from the state tensors `initial` (one per state buffer: a
        row or (B, row)), differentiable w.r.t. them; the module's state neither read nor written
        (TimeChunked's call)."""
        x, config, lengths = self._prepare(x, lengths)
        out = self._run(x, initial, config, False, lengths)
        first = len(self.model.records) + 1
        final = list(out[first : first + len(initial)])
        k = self.model.state.index("spikes") if "spikes" in self.model.state else -1
        if k >= 0 and out[0].requires_grad and not final[k].requires_grad:
            # The fused op's spike state carries no gradient (SPEC §7: spikes[:, last] does; the
            # reference's does): its values (exact counts; half spikes round them) plus a zero that carries
            # the last spikes' gradient, so that the next call's s0 hands its gradient back.
            last = _last_spikes(out[0], initial[k], lengths)
            final[k] = final[k] + (last - last.detach()).to(final[k].dtype)
        return out[0], tuple(final)

    @torch.jit.unused
    def _run(self, x: torch.Tensor, initial, config, record: bool, lengths) -> List[torch.Tensor]:
        """The op's outputs for input x from the state tensors `initial` (one per state buffer, a
        row or (B, row)), the module's state neither read nor written; `config` as _configure
        returns it, `lengths` checked."""
        dt, window, max_spikes, noise_std, noise_scale, which = config
        noise = None
        if noise_std > 0 and self.noise == "torch":
            dtype = self._parameters["threshold"].dtype
            noise = torch_noise(noise_std, dt, [x.shape[0], x.shape[1], self.n_neurons], dtype, x.device)
        model, params = self.model, self._parameters
        return functional.run(model, which, x.device, x, initial, tuple(map(params.get, model.params)), noise,
                              noise_scale, dt, window, max_spikes, self._spike_generation_fn, self._kernel_id, record,
                              lengths)

    @torch.jit.unused
    def _keep_state(self, final):
        """The state after a call whose final state tensors are `final` (B, row) each: batch row 0
        (batch_state=False, as the seed keeps it) or every row."""
        model, buffers = self.model, self._buffers
        for name, f in zip(model.state, final):
            kept = buffers[name]
            new = kept_state(kept, f, self.batch_state)
            if new is not kept:  # the first call after reset_state(): the state becomes per-row
                buffers[name] = new

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spikes (B,T,N) for input (B,T,size_in), (T,size_in) or (..., 1) broadcast; `lengths`: B
        integers (a list, or an integer tensor), row b runs its first lengths[b] steps."""
        if torch.jit.is_scripting():
            return self._forward_scripted(x, lengths)
        return self._evolve(x, False, lengths)[0]

    def _forward_scripted(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def _scripted_prologue(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        """The forward under torch.jit.script, for inference, up to the op: what _evolve does without
        the Python-only checks and backend choice (the op still checks its arguments). Needs the
        extension loaded (import lif_cuda) where it runs."""
        if self._kernel_id < 0:  # NO_KERNEL (TorchScript reads no module globals)
            # A user's own spike function may have another forward: never run it on the fused op.
            raise RuntimeError("a scripted layer runs the fused op; this layer's spike_generation_fn has no fused "
                               "kernel (run it in eager mode)")
        n = self.size_in
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or (x.shape[-1] != n and x.shape[-1] != 1):
            raise ValueError("input must have shape (B, T, " + str(n) + ") or (T, " + str(n) + "), or a last "
                             "dimension of 1")
        x = x.expand(x.shape[0], x.shape[1], n)
        dtype = self.threshold.dtype
        half = x.dtype == torch.float16 or x.dtype == torch.bfloat16
        if x.dtype != dtype and not (dtype == torch.float32 and half):
            x = x.to(dtype)
        B, T = x.shape[0], x.shape[1]
        self._check_state(B)
        noise: Optional[torch.Tensor] = None
        noise_scale = 0.0
        if self.noise_std > 0 and self.noise == "torch":
            noise = torch_noise(self.noise_std, self.dt, [B, T, self.n_neurons], dtype, x.device)
        elif self.noise_std > 0:
            noise_scale = kernel_noise_scale(self.noise_std, self.dt)
        return x, scripted_lengths(lengths, x.device), noise, noise_scale

    def evolve(self, x, record=False, lengths=None):
        """Returns (spikes, state, record_dict): state {name: tensor} of every state buffer; record_dict
        (when record) the records and "spikes", each (B,T,...). `lengths`: as for forward."""
        out = self._evolve(x, record, lengths)
        state = {name: getattr(self, name).clone() for name in self.model.state}
        rec = {**dict(zip(self.model.records, out[1:])), "spikes": out[0]} if record else {}
        return out[0], state, rec


def _last_spikes(spikes, s0, lengths):
    """Each row's spikes at its last step (SPEC §8: at its length), s0 where it ran none."""
    B, T, N = spikes.shape
    if T == 0:
        return s0.expand(B, N).to(spikes.dtype)
    if lengths is None:
        return spikes[:, T - 1]
    last = (lengths.to(torch.int64) - 1).clamp(min=0).view(B, 1, 1).expand(B, 1, N)
    return torch.where(lengths.view(B, 1) > 0, spikes.gather(1, last).squeeze(1), s0.to(spikes.dtype))


class LIFNeuron(NeuronLayer):
    """Leaky integrate-and-fire neurons with multi-spike output and a subtractive reset.

    v <- alpha * v + I + noise + bias, alpha = exp(-dt / tau_mem); s = min(floor(v / thr), M) where
    v >= thr; v <- v - s * thr. Input (B,T,N) or (T,N), output spikes (B,T,N).

    noise: with noise_std > 0, "kernel" (default) draws the noise inside the fused kernel (Philox,
    reproducible under torch.manual_seed, the same on CPU and CUDA, no (B,T,N) tensor); "torch"
    draws it with torch.randn as Rockpool does (bit-identical to Rockpool under the same seed).

    State (SPEC §5, §8): `vmem`, detached, carried from one call to the next. batch_state=False (the
    seed's behaviour): batch row 0's final membrane, shape (N,), which starts every row of the next
    call. batch_state=True: every row's final membrane, shape (B, N), from which each row of the next
    call continues (truncated BPTT: two chunks give one run's spikes and state bit for bit, the
    gradient is cut between them); the next call must have the same B (a ValueError says so) until
    reset_state(), which goes back to a zero (N,) state that starts any B. state_dict() holds vmem
    in its current shape; load_state_dict() takes an (N,) vmem, or a (B, N) one when batch_state is
    True, and the module then continues from it.

    lengths (forward/evolve, SPEC §8): B integers 0 <= lengths[b] <= T (a list, or an integer
    tensor on the input's device or the CPU); row b runs its first lengths[b] steps and the rest is
    padding (no spikes, membrane held, no gradient), so a padded batch equals its rows run alone;
    the state kept is each row's state at its length.

    leak_mode: "taus" (default: the parameter is tau_mem) or "decays": the parameter is the decay
    `alpha` itself ((N,) or (), in [0, 1], default exp(-dt/20 ms)), trained directly (Rockpool's
    leak_mode "decays"); tau_mem is then None.

    evolve(x, record) returns (spikes, {"vmem"}, {"vmem", "spikes"} when record).
    """

    model = functional.LIF

    def __init__(self, shape=None, tau_mem=None, threshold=None, bias=0.0, dt=1e-3, noise_std=0.0,
                 spike_generation_fn=StepPWL, learning_window=0.5, max_spikes_per_dt=2.0**16, backend="auto",
                 noise="kernel", batch_state=False, leak_mode="taus", alpha=None):
        super().__init__()
        default_decay = _leak_mode(leak_mode, dt, tau_mem=tau_mem, alpha=alpha)
        self.leak_mode = leak_mode
        self.alpha = None
        if leak_mode == "decays":
            self.model = functional.LIF_DECAYS
        n = self._init_lif(shape, tau_mem, threshold, bias, alpha, default_decay)
        self.register_buffer("vmem", torch.zeros(n))
        self._init_settings(dt, noise_std, learning_window, max_spikes_per_dt, spike_generation_fn, backend, noise,
                            batch_state)

    def _state_rows(self):
        return {"vmem": (self.n_neurons,)}

    def _forward_scripted(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        x, lengths, noise, noise_scale = self._scripted_prologue(x, lengths)
        leak = self.tau_mem
        if self.alpha is not None:
            leak = self.alpha
        assert leak is not None
        # Inference only: u is not saved (save_u=False); the surrogate id only matters to a backward.
        out = torch.ops.lif_cuda.lif_forward(
            x, self.vmem, leak, self.threshold, self.bias, noise, None, self.dt, noise_scale,
            self.learning_window, self.max_spikes_per_dt, 0, False, False, lengths, self.alpha is not None,
        )
        if x.shape[0] > 0:
            self.vmem = kept_state(self.vmem, out[2], self.batch_state)
        return out[0]


class AdaptiveLIF(NeuronLayer):
    """LIFNeuron with an adaptive threshold (SPEC §10, the adaptive LIF of Bellec et al. 2018,
    multi-spike): each step the threshold is A = threshold + beta_adapt * b, and

        v <- alpha * v + I + noise + bias;  s = min(floor(v / A), M) where v >= A;  v <- v - s * A;
        b <- rho * b + (1 - rho) * s,        alpha = exp(-dt / tau_mem), rho = exp(-dt / tau_adapt).

    Parameters, each (N,) or () and trainable: tau_mem (default 20 ms), threshold (1.0), bias (0.0),
    tau_adapt (200 ms), beta_adapt (1.0). State `vmem` and `adapt` (the adaptation b), kept as
    LIFNeuron keeps vmem: batch row 0, or every row with batch_state=True (SPEC §8). noise, lengths,
    backend, half-precision input: as LIFNeuron's.

    evolve(x, record) returns (spikes, {"vmem", "adapt"}, {"vmem", "adapt", "spikes"} when record).
    """

    model = functional.ADAPTIVE

    def __init__(self, shape=None, tau_mem=None, threshold=None, bias=0.0, tau_adapt=None, beta_adapt=None, dt=1e-3,
                 noise_std=0.0, spike_generation_fn=StepPWL, learning_window=0.5, max_spikes_per_dt=2.0**16,
                 backend="auto", noise="kernel", batch_state=False):
        super().__init__()
        n = self._init_lif(shape, tau_mem, threshold, bias)
        self.tau_adapt = _neuron_param("tau_adapt", tau_adapt, n, 200e-3, positive=True)
        self.beta_adapt = _neuron_param("beta_adapt", beta_adapt, n, 1.0, positive=False)
        self.register_buffer("vmem", torch.zeros(n))
        self.register_buffer("adapt", torch.zeros(n))
        self._init_settings(dt, noise_std, learning_window, max_spikes_per_dt, spike_generation_fn, backend, noise,
                            batch_state)

    def _state_rows(self):
        return {"vmem": (self.n_neurons,), "adapt": (self.n_neurons,)}

    def _forward_scripted(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        x, lengths, noise, noise_scale = self._scripted_prologue(x, lengths)
        out = torch.ops.lif_cuda.adaptive_forward(
            x, self.vmem, self.adapt, self.tau_mem, self.threshold, self.bias, self.tau_adapt, self.beta_adapt, noise,
            None, self.dt, noise_scale, self.learning_window, self.max_spikes_per_dt, 0, False, False, lengths,
        )
        if x.shape[0] > 0:
            self.vmem = kept_state(self.vmem, out[3], self.batch_state)
            self.adapt = kept_state(self.adapt, out[4], self.batch_state)
        return out[0]


def _n_from_shape(shape):
    if shape is None:
        raise ValueError("shape must be given: the number of neurons, e.g. shape=(5,)")
    if np.size(shape) > 1:
        raise ValueError(f"shape must have only one dimension for LIFNeuron, got {shape}")
    value = np.array(shape).item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"shape must be a whole number of neurons, got {shape!r}")
    n = int(value)
    if n < 0:
        raise ValueError(f"shape must be a non-negative number of neurons, got {shape}")
    return n


class SynapticLIF(NeuronLayer):
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
    backend: "auto", "fused" or "reference", as LIFNeuron's. evolve(x, record) returns (spikes,
    {"vmem", "isyn", "spikes"}, {"vmem" (B,T,N), "isyn" (B,T,N,S), "irec" (B,T,N,S), "spikes"}).
    leak_mode: "taus" (default: the parameters are tau_mem and tau_syn) or "decays": they are the
    decays `alpha` ((N,) or ()) and `beta` ((N,S), (1,S) or ()) themselves, in [0, 1] (default
    exp(-dt/20 ms)), trained directly (Rockpool's leak_mode "decays"); tau_mem and tau_syn are then
    None.
    """

    model = functional.SYNAPTIC
    decays_model = functional.SYNAPTIC_DECAYS  # leak_mode="decays"

    def __init__(self, shape=None, tau_mem=None, tau_syn=None, threshold=None, bias=0.0, has_rec=False, w_rec=None,
                 dt=1e-3, noise_std=0.0, spike_generation_fn=StepPWL, learning_window=0.5, max_spikes_per_dt=2.0**16,
                 weight_init_func=None, backend="auto", noise="kernel", batch_state=False, leak_mode="taus",
                 alpha=None, beta=None):
        super().__init__()
        n, s = _shape_to_ns(shape)
        self.n_neurons = self.size_out = n
        self.n_synapses = s
        self.size_in = n * s
        self.shape = (n * s, n)
        default_decay = _leak_mode(leak_mode, dt, tau_mem=tau_mem, tau_syn=tau_syn, alpha=alpha, beta=beta)
        self.leak_mode = leak_mode
        syn_shape = (lambda sh: sh in ((n, s), (1, s), ()), f"({n}, {s}), (1, {s}) or ()")
        if leak_mode == "taus":
            self.tau_mem = _neuron_param("tau_mem", tau_mem, n, DEFAULT_TAU, positive=True)
            self.tau_syn = nn.Parameter(_as_param("tau_syn", tau_syn, *syn_shape,
                                                  lambda: torch.full((n, s), DEFAULT_TAU), True))
            self.alpha = self.beta = None
        else:
            self.model = self.decays_model
            self.tau_mem = self.tau_syn = None
            self.alpha = _neuron_param("alpha", alpha, n, default_decay, positive=DECAY)
            self.beta = nn.Parameter(_as_param("beta", beta, *syn_shape, lambda: torch.full((n, s), default_decay),
                                               DECAY))
        self.threshold = _neuron_param("threshold", threshold, n, 1.0, positive=True)
        self.bias = _neuron_param("bias", bias, n, 0.0, positive=False)
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
        self._init_settings(dt, noise_std, learning_window, max_spikes_per_dt, spike_generation_fn, backend, noise,
                            batch_state)

    def _model_repr(self):
        return f"n_synapses={self.n_synapses}, has_rec={self.has_rec}, leak_mode={self.leak_mode!r}, "

    def _state_rows(self):
        return {"vmem": (self.n_neurons,), "isyn": (self.n_neurons, self.n_synapses), "spikes": (self.n_neurons,)}

    def _forward_scripted(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._synaptic_scripted(x, lengths, None, None, None)[0]

    def _synaptic_scripted(self, x: torch.Tensor, lengths: Optional[torch.Tensor], w_ahp: Optional[torch.Tensor],
                           tau_ahp: Optional[torch.Tensor], h0: Optional[torch.Tensor]) -> List[torch.Tensor]:
        """The synaptic op's inference call on the module's state (with the AHP lane where given), the
        state kept; the op's outputs."""
        x, lengths, noise, noise_scale = self._scripted_prologue(x, lengths)
        leak_mem, leak_syn = self.tau_mem, self.tau_syn
        if self.alpha is not None:
            leak_mem, leak_syn = self.alpha, self.beta
        assert leak_mem is not None and leak_syn is not None
        out = torch.ops.lif_cuda.synaptic_forward(
            x, self.vmem, self.isyn, self.spikes, leak_mem, leak_syn, self.threshold, self.bias, self.w_rec,
            noise, None, self.dt, noise_scale, self.learning_window, self.max_spikes_per_dt, 0, False, False,
            lengths, w_ahp, tau_ahp, h0, self.alpha is not None,
        )
        if x.shape[0] > 0:
            self.vmem = kept_state(self.vmem, out[4], self.batch_state)
            self.isyn = kept_state(self.isyn, out[5], self.batch_state)
            self.spikes = kept_state(self.spikes, out[6], self.batch_state)
        return list(out)


class AHPSynapticLIF(SynapticLIF):
    """SynapticLIF with an after-hyperpolarisation (AHP) current per neuron: Rockpool's aLIFTorch
    (in either leak_mode, as SynapticLIF) on the fused kernels (SPEC §9).

    Per step, after the synapses: h = (h + s_prev * w_ahp) * exp(-dt/tau_ahp), s_prev the previous
    step's spikes; the membrane adds h with the synaptic currents (the S + 1 currents summed in
    torch.sum's order, as Rockpool sums them). A negative w_ahp (default -0.9) pulls the membrane down
    after each spike: spike-frequency adaptation. w_ahp and tau_ahp (default 20 ms): (N,) or (),
    trainable. State: SynapticLIF's and `iahp` (N,) ((B,N) with batch_state); evolve's records add
    "iahp" (B,T,N). Everything else (shape, has_rec, noise, lengths, batch_state, half I/O, backend)
    as SynapticLIF's. A subclass rather than an option of SynapticLIF: the model's state, parameters
    and records are the class's (lif_cuda.functional.AHP_SYNAPTIC), so SynapticLIF keeps its own.
    """

    model = functional.AHP_SYNAPTIC
    decays_model = functional.AHP_SYNAPTIC_DECAYS

    def __init__(self, shape=None, tau_mem=None, tau_syn=None, threshold=None, bias=0.0, has_rec=False, w_rec=None,
                 w_ahp=None, tau_ahp=None, dt=1e-3, noise_std=0.0, spike_generation_fn=StepPWL, learning_window=0.5,
                 max_spikes_per_dt=2.0**16, weight_init_func=None, backend="auto", noise="kernel", batch_state=False):
        super().__init__(shape, tau_mem, tau_syn, threshold, bias, has_rec, w_rec, dt, noise_std, spike_generation_fn,
                         learning_window, max_spikes_per_dt, weight_init_func, backend, noise, batch_state)
        n = self.n_neurons
        self.w_ahp = _neuron_param("w_ahp", w_ahp, n, -0.9, positive=False)
        self.tau_ahp = _neuron_param("tau_ahp", tau_ahp, n, 20e-3, positive=True)
        self.register_buffer("iahp", torch.zeros(n))

    def _state_rows(self):
        return {**super()._state_rows(), "iahp": (self.n_neurons,)}

    def _forward_scripted(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self._synaptic_scripted(x, lengths, self.w_ahp, self.tau_ahp, self.iahp)
        if x.shape[0] > 0:
            self.iahp = kept_state(self.iahp, out[12], self.batch_state)
        return out[0]


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
