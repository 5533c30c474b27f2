"""LIFNeuron: a drop-in for Rockpool's LIFNeuronTorch running the fused kernels (SPEC §5)."""
import math

import numpy as np
import torch
from torch import nn

from ._checks import check_float_tensor
from .functional import lif_evolve
from .reference import StepPWL

__all__ = ["LIFNeuron"]


def _n_from_shape(shape):
    if shape is None:
        raise ValueError("shape must be given: the number of neurons, e.g. shape=(5,)")
    if np.size(shape) > 1:
        raise ValueError(f"shape must have only one dimension for LIFNeuron, got {shape}")
    n = int(np.array(shape).item())
    if n < 0:
        raise ValueError(f"shape must be a non-negative number of neurons, got {shape}")
    return n


def _init_param(name, value, n, default):
    if value is None:
        return torch.full((n,), float(default))
    t = torch.as_tensor(value).detach().clone()
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a real number or a float tensor, got {t.dtype}")
    t = t.to(torch.float32)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n},) or (), got {tuple(t.shape)}")
    return t


class LIFNeuron(nn.Module):
    """Leaky integrate-and-fire neurons with multi-spike output and a subtractive reset.

    v <- alpha * v + I + noise + bias, alpha = exp(-dt / tau_mem); s = min(floor(v / thr), M) where
    v >= thr; v <- v - s * thr. Input (B,T,N) or (T,N), output spikes (B,T,N).

    noise: with noise_std > 0, "kernel" (default) draws the noise inside the fused kernel (Philox,
    reproducible under torch.manual_seed, the same on CPU and CUDA, no (B,T,N) tensor); "torch"
    draws it with torch.randn as Rockpool does (bit-identical to Rockpool under the same seed).
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
    ):
        super().__init__()
        n = _n_from_shape(shape)
        self.n_neurons = n
        self.size_in = self.size_out = n
        self.shape = (n,)
        self.tau_mem = nn.Parameter(_init_param("tau_mem", tau_mem, n, 20e-3))
        self.threshold = nn.Parameter(_init_param("threshold", threshold, n, 1.0))
        self.bias = nn.Parameter(_init_param("bias", bias, n, 0.0))
        self.register_buffer("vmem", torch.zeros(n))
        self.dt = float(dt)
        self.noise_std = float(noise_std)
        self.learning_window = float(learning_window)
        if isinstance(max_spikes_per_dt, torch.Tensor):
            max_spikes_per_dt = max_spikes_per_dt.item()
        self.max_spikes_per_dt = float(max_spikes_per_dt)
        self.spike_generation_fn = spike_generation_fn
        self.backend = backend
        self.noise = noise
        self._check_config()

    def _check_config(self):
        for name, positive in (("dt", True), ("noise_std", False), ("learning_window", False)):
            v = getattr(self, name)
            if not math.isfinite(v) or (v <= 0 if positive else v < 0):
                raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {v}")
        if not self.max_spikes_per_dt >= 1:
            raise ValueError(f"max_spikes_per_dt must be >= 1, got {self.max_spikes_per_dt}")
        if self.noise not in ("kernel", "torch"):
            raise ValueError(f"noise must be 'kernel' (drawn in the fused kernel) or 'torch' (a torch.randn tensor), got {self.noise!r}")
        if self.backend not in ("auto", "fused", "reference"):
            raise ValueError(f"backend must be 'auto', 'fused' or 'reference', got {self.backend!r}")

    def extra_repr(self):
        return (
            f"shape={self.shape}, dt={self.dt}, noise_std={self.noise_std}, "
            f"learning_window={self.learning_window}, max_spikes_per_dt={self.max_spikes_per_dt}, "
            f"spike_generation_fn={getattr(self.spike_generation_fn, '__name__', self.spike_generation_fn)}, "
            f"backend={self.backend!r}, noise={self.noise!r}"
        )

    def reset_state(self):
        """Membrane back to zero."""
        with torch.no_grad():
            self.vmem.zero_()
        return self

    def _auto_batch(self, x):
        check_float_tensor("input", x, allow_half=True)
        n = self.n_neurons
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3:
            raise ValueError(f"input must have shape (B, T, {n}) or (T, {n}), got {tuple(x.shape)}")
        if x.shape[-1] != n:
            if x.shape[-1] == 1:
                x = x.expand(x.shape[0], x.shape[1], n)
            else:
                raise ValueError(f"input's last dimension must be {n} (or 1), got shape {tuple(x.shape)}")
        return x

    def _evolve(self, x, record):
        x = self._auto_batch(x)
        dtype = self.tau_mem.dtype
        if x.dtype != dtype:
            x = x.to(dtype)
        B, T, N = x.shape
        noise = None
        if self.noise_std > 0 and self.noise == "torch":
            zeta = self.noise_std * torch.sqrt(torch.tensor(self.dt, dtype=dtype, device=x.device))
            noise = zeta * torch.randn((B, T, N), dtype=dtype, device=x.device)
        # A snapshot: backward may hold v0 while the buffer is updated in place below.
        v0 = self.vmem.to(device=x.device, dtype=dtype, copy=True)
        spikes, vmem, v_final = lif_evolve(
            x,
            v0,
            self.tau_mem,
            self.threshold,
            self.bias,
            self.dt,
            noise=noise,
            learning_window=self.learning_window,
            max_spikes_per_dt=self.max_spikes_per_dt,
            spike_generation_fn=self.spike_generation_fn,
            record=record,
            backend=self.backend,
            noise_std=self.noise_std if noise is None else 0.0,
        )
        # The new state is batch row 0, detached (as the seed keeps it). Only after success.
        if B > 0:
            with torch.no_grad():
                self.vmem.copy_(v_final[0])
        return spikes, vmem

    def forward(self, x):
        """Spikes (B,T,N) for input (B,T,N), (T,N) or (..., 1) broadcast over the neurons."""
        spikes, _ = self._evolve(x, record=False)
        return spikes

    def evolve(self, x, record=False):
        """Returns (spikes, state, record_dict); record_dict has "vmem" and "spikes" when record."""
        spikes, vmem = self._evolve(x, record=record)
        state = {"vmem": self.vmem.clone()}
        rec = {"vmem": vmem, "spikes": spikes} if record else {}
        return spikes, state, rec
