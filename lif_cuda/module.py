"""LIFNeuron: a drop-in for Rockpool's LIFNeuronTorch running the fused kernels (SPEC §5)."""
import math
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import functional as _functional
from ._checks import (
    CHECKED_VALUES,
    check_float_tensor,
    check_lengths,
    check_max_spikes,
    check_param,
    check_scalar,
    check_spike_fn,
    compute_dtype,
    param_values,
)
from .functional import NO_KERNEL, resolve_backend, surrogate_id
from .noise import draw_noise_key, kernel_noise, torch_noise
from .reference import StepPWL

__all__ = ["LIFNeuron"]

_HALF = (torch.float16, torch.bfloat16)
_IO_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

def kept_state(state: torch.Tensor, final: torch.Tensor, batch_state: bool) -> Optional[torch.Tensor]:
    """One state tensor after a successful call of batch size > 0 (SPEC §5, §8), detached (the
    gradient is cut between calls; detach, not a no_grad block: torch.export could not load a
    program saved with one): batch row 0 of `final` copied into `state` (batch_state False, the
    seed's behaviour), or every row (a per-row state of that batch size); both in place, returning
    None. The first call after reset_state() with batch_state True returns the new (B, ...) state,
    for the caller to assign."""
    if not batch_state:
        state.copy_(final[0].detach())
        return None
    if state.dim() == final.dim():
        state.copy_(final.detach())
        return None
    return final.detach().clone()


def scripted_lengths(lengths: Optional[torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
    """lengths for the op under TorchScript (no Python checks there): an integer tensor, moved to the
    input's device as int64. The op checks the shape, and the values of a CPU tensor."""
    if lengths is None:
        return None
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError("lengths must be an integer tensor")
    return lengths.to(device=device, dtype=torch.long)


def apply_keeping_float32(module, apply, fn, recurse):
    """nn.Module._apply (`apply`) for a layer whose parameters and state stay float32 under
    model.half() / .to(torch.bfloat16): half precision is an input/output format of the kernels, the
    membrane and arithmetic are float32. The float32 values are kept as they were (converting to half
    and back would round them), moved to the new device if fn moves them."""
    before = {}
    for name in module._FLOAT32_TENSORS:
        t = getattr(module, name)
        if t is not None and t.dtype == torch.float32:
            before[name] = (t.data, getattr(t, "grad", None))
            if before[name][1] is not None:
                t.grad = None  # converted below with its tensor (torch refuses a half grad on it)
    try:
        apply(fn, recurse)
    finally:
        for name, (data, grad) in before.items():
            t = getattr(module, name)
            if t.dtype in _HALF:
                t.data = data.to(t.device)
            if grad is not None:
                t.grad = grad.to(device=t.device, dtype=t.dtype) if grad.dtype != t.dtype else grad.to(t.device)
    return module


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


def _init_param(name, value, n, default, positive):
    if value is None:
        return torch.full((n,), float(default))
    try:
        t = torch.as_tensor(value).detach().clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a real number or a float tensor, got {value!r}") from exc
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a real number or a float tensor, got {t.dtype}")
    t = t.to(torch.float32)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n},) or (), got {tuple(t.shape)}")
    # The same value checks as every call makes (SPEC §6), made here so a bad module is never built.
    if not bool((torch.isfinite(t) & ((t > 0) if positive else True)).all()):
        raise ValueError(f"{name} must be finite{' and > 0' if positive else ''} everywhere, got {t}")
    return t


class LIFNeuron(nn.Module):
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
    """

    def __init__(
        self,
        shape=None,
        tau_mem=None,
        threshold=None,
        bias=0.0,
        dt=1e-3,
        noise_std=0.0,
        spike_generation_fn=StepPWL,
        learning_window=0.5,
        max_spikes_per_dt=2.0**16,
        backend="auto",
        noise="kernel",
        batch_state=False,
    ):
        super().__init__()
        n = _n_from_shape(shape)
        self.n_neurons = n
        self.size_in = self.size_out = n
        self.shape = (n,)
        self.tau_mem = nn.Parameter(_init_param("tau_mem", tau_mem, n, 20e-3, positive=True))
        self.threshold = nn.Parameter(_init_param("threshold", threshold, n, 1.0, positive=True))
        self.bias = nn.Parameter(_init_param("bias", bias, n, 0.0, positive=False))
        self.register_buffer("vmem", torch.zeros(n))
        self._init_config(
            dt, noise_std, learning_window, max_spikes_per_dt, spike_generation_fn, backend, noise, batch_state
        )
        self._config_cache = None  # see _call_config

    __jit_unused_properties__ = ["spike_generation_fn"]
    __jit_ignored_attributes__ = ["_config_cache"]

    def _init_config(
        self, dt, noise_std, learning_window, max_spikes_per_dt, spike_generation_fn, backend, noise, batch_state
    ):
        """The constructor's checks of the non-parameter settings (shared with SynapticLIF)."""
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
        self._check_config()

    @property
    def spike_generation_fn(self):
        return self._spike_generation_fn

    @spike_generation_fn.setter
    def spike_generation_fn(self, fn):
        # Resolved here, outside any torch.compile trace (see functional.surrogate_id); an int
        # always (TorchScript types the attribute). A bad value counts as NO_KERNEL here and is
        # named by a TypeError at the next call.
        self._spike_generation_fn = fn
        self._spike_fn_version = getattr(self, "_spike_fn_version", 0) + 1  # a key of _call_config
        try:
            self._surrogate_id = surrogate_id(fn)
        except TypeError:
            self._surrogate_id = NO_KERNEL

    def _check_config(self):
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

    def extra_repr(self):
        return (
            f"shape={self.shape}, dt={self.dt}, noise_std={self.noise_std}, "
            f"learning_window={self.learning_window}, max_spikes_per_dt={self.max_spikes_per_dt}, "
            f"spike_generation_fn={getattr(self.spike_generation_fn, '__name__', self.spike_generation_fn)}, "
            f"backend={self.backend!r}, noise={self.noise!r}, batch_state={self.batch_state}"
        )

    _FLOAT32_TENSORS = ("tau_mem", "threshold", "bias", "vmem")

    def _apply(self, fn, recurse=True):
        return apply_keeping_float32(self, super()._apply, fn, recurse)

    def _state_rows(self):
        """The state buffers and the shape of one row of each (SynapticLIF has more)."""
        return {"vmem": (self.n_neurons,)}

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

    def _keep_state(self, v_final: torch.Tensor, B: int):
        """After a successful call: the state the next call starts from (kept_state)."""
        if B == 0:
            return
        v = kept_state(self.vmem, v_final, self.batch_state)
        if v is not None:  # the first call after reset_state(): the state becomes (B, N)
            self.vmem = v

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
        # nn.Module's, not super(): SynapticLIF shares this method.
        nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                        unexpected_keys, error_msgs)

    def _auto_batch(self, x):
        """(T, size_in) -> (1, T, size_in); a last dimension of 1 broadcast (shared with SynapticLIF,
        whose size_in is N*S)."""
        check_float_tensor("input", x, allow_half=True)
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

    def _call_config(self, device):
        """(dt, window, max_spikes, noise_std, backend) for a call on `device`: the attributes
        checked (SPEC §6) and the backend resolved once per change of any of them, not per call."""
        key = (self.dt, self.learning_window, self.max_spikes_per_dt, self.noise_std, self.noise, self.backend,
               self._spike_fn_version, device.type)
        cached = self._config_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        dt = check_scalar("dt", self.dt, positive=True)
        window = check_scalar("learning_window", self.learning_window, nonneg=True)
        max_spikes = check_max_spikes(self.max_spikes_per_dt, self.tau_mem.dtype)
        noise_std = check_scalar("noise_std", self.noise_std, nonneg=True)
        if self.noise not in ("kernel", "torch"):
            self._check_config()  # names it
        which = resolve_backend(self.backend, device, self._spike_generation_fn, self._surrogate_id)
        config = (dt, window, max_spikes, noise_std, which)
        self._config_cache = (key, config)
        return config

    # Eager only: TorchScript sees a stub (forward takes _forward_scripted when scripting).
    @torch.jit.unused
    def _evolve(self, x: torch.Tensor, record: bool, lengths=None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        # The hot path of a call, kept short: the common input passes one test, the parameters come
        # straight from the module's dicts, and the checks that cannot change between calls are
        # cached (_call_config) or made by the op itself.
        if not (type(x) is torch.Tensor and x.dim() == 3 and x.shape[2] == self.n_neurons and x.dtype in _IO_DTYPES):
            x = self._auto_batch(x)
        params = self._parameters
        tau, thr, bias, state = params["tau_mem"], params["threshold"], params["bias"], self._buffers["vmem"]
        dtype = tau.dtype
        # Computed in the parameters' dtype, as Rockpool does; float16/bfloat16 input stays as it is
        # (the kernels read it directly, keep the state in float32 and return spikes in its dtype).
        if x.dtype != dtype and not (dtype == torch.float32 and x.dtype in _HALF):
            x = x.to(dtype)
        device = x.device
        if device != tau.device:
            check_param("tau_mem", tau, self.n_neurons, device, positive=True)  # names the devices
        dt, window, max_spikes, noise_std, which = self._call_config(device)
        B = x.shape[0]
        if state.dim() == 2:
            self._check_state(B)
        if lengths is not None:  # the fused CPU op checks the values of CPU lengths itself
            lengths = check_lengths(lengths, B, x.shape[1], device, values=which == "reference" or device.type != "cpu")
        noise = None
        noise_scale = 0.0  # in-kernel noise: the op draws its key (see functional.lif_evolve)
        if noise_std > 0:
            if self.noise == "torch":
                noise = torch_noise(noise_std, dt, list(x.shape), dtype, x.device)
            else:
                noise_scale = noise_std * math.sqrt(dt)
        if which == "fused":
            if device.type != "cpu":  # on the CPU the op checks the values itself, for free
                CHECKED_VALUES.check(param_values(tau, thr, bias))
            # The state itself is v0 (the op copies what its backward needs): no copy per call.
            spikes, vmem, v_final, _, _ = _functional.lif_forward_op(
                x, state, tau, thr, bias, noise, None, dt, noise_scale, window, max_spikes, self._surrogate_id,
                record, False, lengths,
            )
        else:
            # The reference's autograd graph keeps v0: hand it a snapshot of the state.
            if noise_scale > 0:
                noise = kernel_noise(x.shape, noise_scale, draw_noise_key(), compute_dtype(x.dtype), x.device)
            spikes, vmem, v_final = _functional.lif_evolve(
                x, state.to(device=x.device, dtype=dtype, copy=True), tau, thr, bias, dt, noise=noise,
                learning_window=window, max_spikes_per_dt=max_spikes, spike_generation_fn=self._spike_generation_fn,
                record=record, backend="reference", _surrogate=self._surrogate_id, lengths=lengths,
            )
        # The new state, only after success.
        if B > 0 and not self.batch_state:
            state.copy_(v_final[0].detach())  # batch row 0, as the seed keeps it
        else:
            self._keep_state(v_final, B)
        return spikes, vmem

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spikes (B,T,N) for input (B,T,N), (T,N) or (..., 1) broadcast over the neurons; `lengths`:
        B integers (a list, or an integer tensor), row b runs its first lengths[b] steps."""
        if torch.jit.is_scripting():
            return self._forward_scripted(x, lengths)
        return self._evolve(x, False, lengths)[0]

    def _forward_scripted(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The forward under torch.jit.script, for inference: the fused op called directly (as
        _evolve's fused branch does, same values bit for bit), without the Python-only checks and
        backend choice (the op still checks its arguments). Needs the extension loaded (import
        lif_cuda) where it runs."""
        n = self.n_neurons
        if self._surrogate_id != 0 and self._surrogate_id != 1:
            # A user's own spike function may have another forward: never run it on the fused op.
            raise RuntimeError("LIFNeuron: a scripted layer runs the fused op, which implements only "
                               "StepPWL and PeriodicExponential; this layer's spike_generation_fn has no "
                               "fused kernel (run it in eager mode)")
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or (x.shape[-1] != n and x.shape[-1] != 1):
            raise ValueError("LIFNeuron: input must have shape (B, T, N) or (T, N), N the number of neurons or 1")
        x = x.expand(x.shape[0], x.shape[1], n)
        dtype = self.tau_mem.dtype
        half = x.dtype == torch.float16 or x.dtype == torch.bfloat16
        if x.dtype != dtype and not (dtype == torch.float32 and half):  # as _evolve does
            x = x.to(dtype)
        B, T = x.shape[0], x.shape[1]
        self._check_state(B)
        lengths = scripted_lengths(lengths, x.device)
        noise: Optional[torch.Tensor] = None
        noise_scale = 0.0
        if self.noise_std > 0 and self.noise == "torch":
            noise = torch_noise(self.noise_std, self.dt, [B, T, n], dtype, x.device)
        elif self.noise_std > 0:
            noise_scale = self.noise_std * math.sqrt(self.dt)  # the op draws the key
        # Inference only: u is not saved (save_u=False); the surrogate id only matters to a backward.
        spikes, _, v_final, _, _ = torch.ops.lif_cuda.lif_forward(
            x, self.vmem, self.tau_mem, self.threshold, self.bias, noise, None, self.dt, noise_scale,
            self.learning_window, self.max_spikes_per_dt, 0, False, False, lengths,
        )
        self._keep_state(v_final, B)
        return spikes

    def evolve(self, x, record=False, lengths=None):
        """Returns (spikes, state, record_dict); record_dict has "vmem" and "spikes" when record.
        `lengths`: as for forward."""
        spikes, vmem = self._evolve(x, record=record, lengths=lengths)
        state = {"vmem": self.vmem.clone()}
        rec = {"vmem": vmem, "spikes": spikes} if record else {}
        return spikes, state, rec
