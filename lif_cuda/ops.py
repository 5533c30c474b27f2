"""Python glue for the compiled ops: their fake (meta) kernels, and the handles to call them.

The schemas live in csrc/ops.cpp, the device kernels in csrc/cpu and csrc/cuda, and the autograd
formula in csrc/autograd.cpp (C++, so that no call enters Python autograd). Everything here is
traceable by torch.compile: no data-dependent Python.
"""
import torch

from . import _ext
from .surrogates import FUSED

__all__ = [
    "SURROGATE_IDS",
    "lif_forward_op",
    "lif_backward_op",
    "synaptic_forward_op",
    "synaptic_backward_op",
    "ahp_synaptic_forward_op",
    "adaptive_forward_op",
    "adaptive_backward_op",
    "kernel_launches",
]

# Surrogate ids passed to the kernels, by name (each class carries its own: lif_cuda.surrogates).
SURROGATE_IDS = {cls.__name__: cls.kernel_id for cls in FUSED}

MASK_BITS = 32  # steps per word of the window mask (core/mask.h kMaskBits)
ADAPT_CHECKPOINT = 32  # steps between the adaptation's checkpoints on the CPU (core/adaptive.h)


def _steps_per(T, k):
    """Entries of a per-step sequence kept every k steps (ceil(T / k))."""
    return -(-T // k)


def _check_devices(input, **tensors):
    """The devices, in the order the C++ checks them: the fake kernels also run for a real call in
    which one tensor is on the meta device (the dispatcher picks Meta), where no C++ check runs."""
    for name, t in tensors.items():
        if t is not None and t.device != input.device:
            raise ValueError(f"{name} must be on {input.device} (the input's device), got {t.device}")

lif_forward_op = lif_backward_op = None
synaptic_forward_op = synaptic_backward_op = None
adaptive_backward_op = None

if _ext.loaded():

    @torch.library.register_fake("lif_cuda::lif_forward")
    def _lif_forward_fake(
        input, v0, tau_mem, threshold, bias, noise, noise_key, dt, noise_scale, window, max_spikes, surrogate,
        record, save_u, lengths=None, decays=False, save_mask=False,
    ):
        _check_devices(input, tau_mem=tau_mem, threshold=threshold, bias=bias, v0=v0, noise=noise, lengths=lengths)
        B, T, N = input.shape
        spikes = input.new_empty((B, T, N))
        # State (recorded membrane, final state, saved u) is in v0's dtype (float32 for half input).
        vmem = v0.new_empty((B, T, N)) if record else v0.new_empty((0,))
        v_final = v0.new_empty((B, N))
        if save_u and save_mask:  # the window mask's int32 words instead of u (SPEC §11)
            u = v0.new_empty((B, _steps_per(T, MASK_BITS), N), dtype=torch.int32)
        else:
            u = v0.new_empty((B, T, N)) if save_u else v0.new_empty((0,))
        # A window mask's backward reads no v0: then no copy of it (host/lif_op.h).
        v0_saved = v0.new_empty(v0.shape) if save_u and not save_mask else v0.new_empty((0,))
        return spikes, vmem, v_final, u, v0_saved

    @torch.library.register_fake("lif_cuda::lif_backward")
    def _lif_backward_fake(
        grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt, window, max_spikes, surrogate,
        scalar_bias, lengths=None, decays=False,
    ):
        B, T, N = grad_spikes.shape  # u may be the window mask (B, ceil(T/32), N)
        return (
            grad_spikes.new_empty((B, T, N)),
            v0.new_empty(v0.shape),
            v0.new_empty(tau_mem.shape),
            v0.new_empty(threshold.shape),
            v0.new_empty(() if scalar_bias else (N,)),
        )

    @torch.library.register_fake("lif_cuda::synaptic_forward")
    def _synaptic_forward_fake(
        input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise, noise_key, dt, noise_scale, window,
        max_spikes, surrogate, record, save, lengths=None, w_ahp=None, tau_ahp=None, h0=None, decays=False,
        save_mask=False, save_i_pre=True, save_h_pre=True, save_counts=False,
    ):
        _check_devices(input, tau_mem=tau_mem, tau_syn=tau_syn, threshold=threshold, bias=bias, w_rec=w_rec, v0=v0,
                       i0=i0, s0=s0, noise=noise, lengths=lengths, w_ahp=w_ahp, tau_ahp=tau_ahp, h0=h0)
        ahp = h0 is not None
        B, T = input.shape[0], input.shape[1]
        N, S = i0.shape[-2], i0.shape[-1]
        none = v0.new_empty((0,))
        return (
            input.new_empty((B, T, N)),
            v0.new_empty((B, T, N)) if record else none,
            v0.new_empty((B, T, N, S)) if record else v0.new_empty((0,)),
            v0.new_empty((B, T, N, S)) if record else v0.new_empty((0,)),
            v0.new_empty((B, N)),
            v0.new_empty((B, N, S)),
            v0.new_empty((B, N)),
            # u, or the window mask's int32 words in its place (SPEC §11)
            (v0.new_empty((B, _steps_per(T, MASK_BITS), N), dtype=torch.int32) if save and save_mask
             else v0.new_empty((B, T, N)) if save else v0.new_empty((0,))),
            # i_pre, or (0, S) where tau_syn needs no gradient
            (v0.new_empty((B, T, N, S)) if save and save_i_pre
             else v0.new_empty((0, S)) if save else v0.new_empty((0,))),
            v0.new_empty(v0.shape) if save else v0.new_empty((0,)),
            v0.new_empty(s0.shape) if save and s0 is not None else v0.new_empty((0,)),
            v0.new_empty((B, T, N)) if ahp and record else v0.new_empty((0,)),
            v0.new_empty((B, N)) if ahp else v0.new_empty((0,)),
            v0.new_empty((B, T, N)) if ahp and save and save_h_pre else v0.new_empty((0,)),
            # the spikes as uint8 counts beside the mask (SPEC §11)
            (v0.new_empty((B, T, N), dtype=torch.uint8) if save and save_mask and save_counts
             else v0.new_empty((0,))),
        )

    @torch.library.register_fake("lif_cuda::synaptic_backward")
    def _synaptic_backward_fake(
        grad_spikes, grad_vmem, grad_isyn, grad_irec, grad_vfinal, grad_ifinal, u, i_pre, v0, s0, tau_mem, tau_syn,
        threshold, w_rec, dt, window, max_spikes, surrogate, scalar_bias, i0_shared, noise_grad, lengths=None,
        grad_iahp=None, grad_hfinal=None, h_pre=None, w_ahp=None, tau_ahp=None, h0_shared=False, decays=False,
        spike_counts=None,
    ):
        B, T, N = grad_spikes.shape  # u may be the window mask, i_pre (0, S) (SPEC §11)
        S = i_pre.shape[-1]
        ahp = h_pre is not None
        return (
            grad_spikes.new_empty((B, T, N * S)),
            v0.new_empty(v0.shape),
            v0.new_empty((N, S) if i0_shared else (B, N, S)),
            v0.new_empty(s0.shape) if s0 is not None else v0.new_empty((0,)),
            v0.new_empty(tau_mem.shape),
            v0.new_empty(tau_syn.shape),
            v0.new_empty(threshold.shape),
            v0.new_empty(() if scalar_bias else (N,)),
            v0.new_empty(w_rec.shape) if w_rec is not None else v0.new_empty((0,)),
            v0.new_empty((B, T, N)) if noise_grad else v0.new_empty((0,)),
            (v0.new_empty((N,) if h0_shared else (B, N)) if ahp else v0.new_empty((0,))),
            v0.new_empty(w_ahp.shape) if ahp else v0.new_empty((0,)),
            v0.new_empty(tau_ahp.shape) if ahp else v0.new_empty((0,)),
        )

    @torch.library.register_fake("lif_cuda::adaptive_forward")
    def _adaptive_forward_fake(
        input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt, noise, noise_key, dt, noise_scale, window,
        max_spikes, surrogate, record, save, lengths=None,
    ):
        _check_devices(input, tau_adapt=tau_adapt, beta_adapt=beta_adapt, tau_mem=tau_mem, threshold=threshold,
                       bias=bias, v0=v0, b0=b0, noise=noise, lengths=lengths)
        B, T, N = input.shape
        none = v0.new_empty((0,))
        seq = lambda wanted: v0.new_empty((B, T, N)) if wanted else v0.new_empty((0,))  # noqa: E731
        every = adapt_checkpoint_every(input.device)
        return (
            input.new_empty((B, T, N)),
            seq(record),
            seq(record),
            v0.new_empty((B, N)),
            v0.new_empty((B, N)),
            seq(save),
            v0.new_empty((B, _steps_per(T, every), N)) if save else v0.new_empty((0,)),
            v0.new_empty(v0.shape) if save else none,
            v0.new_empty(b0.shape) if save else v0.new_empty((0,)),
        )

    @torch.library.register_fake("lif_cuda::adaptive_backward")
    def _adaptive_backward_fake(
        grad_spikes, grad_vmem, grad_adapt, grad_vfinal, grad_bfinal, u, b, v0, b0, tau_mem, threshold, tau_adapt,
        beta_adapt, dt, window, max_spikes, surrogate, scalar_bias, lengths=None,
    ):
        B, T, N = u.shape
        return (
            grad_spikes.new_empty((B, T, N)),
            u.new_empty(v0.shape),
            u.new_empty(b0.shape),
            u.new_empty(tau_mem.shape),
            u.new_empty(threshold.shape),
            u.new_empty(() if scalar_bias else (N,)),
            u.new_empty(tau_adapt.shape),
            u.new_empty(beta_adapt.shape),
        )

    @torch.library.register_fake("lif_cuda::pack_counts")
    def _pack_counts_fake(input, max_count):
        n = input.numel()
        return input.new_empty((n if max_count > 1 else (n + 7) // 8,), dtype=torch.uint8)

    @torch.library.register_fake("lif_cuda::unpack_counts")
    def _unpack_counts_fake(packed, max_count, numel, dtype):
        return packed.new_empty((numel,), dtype=dtype)

    # The op packets themselves (no Python wrapper on the hot path).
    lif_forward_op = torch.ops.lif_cuda.lif_forward
    lif_backward_op = torch.ops.lif_cuda.lif_backward
    synaptic_forward_op = torch.ops.lif_cuda.synaptic_forward
    synaptic_backward_op = torch.ops.lif_cuda.synaptic_backward
    adaptive_backward_op = torch.ops.lif_cuda.adaptive_backward


def ahp_synaptic_forward_op(input, v0, i0, s0, h0, tau_mem, tau_syn, threshold, bias, w_rec, w_ahp, tau_ahp, noise,
                            noise_key, dt, noise_scale, window, max_spikes, surrogate, record, save, lengths=None,
                            decays=False):
    """synaptic_forward with the AHP current (SPEC §9), its arguments in the model's order (the state,
    then the parameters: lif_cuda.functional.AHP_SYNAPTIC) and its leading outputs in the model's
    order: (spikes, vmem, isyn, irec, iahp, v_final, i_final, s_final, h_final)."""
    o = torch.ops.lif_cuda.synaptic_forward(
        input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise, noise_key, dt, noise_scale, window,
        max_spikes, surrogate, record, save, lengths, w_ahp, tau_ahp, h0, decays,
    )
    return o[0], o[1], o[2], o[3], o[11], o[4], o[5], o[6], o[12]


def adapt_checkpoint_every(device):
    """Steps between the values of b the adaptive forward keeps for the backward (core/adaptive.h):
    checkpoints on the CPU, every step on CUDA."""
    return 1 if torch.device(device).type == "cuda" else ADAPT_CHECKPOINT


def adaptive_forward_op(input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt, noise, noise_key, dt,
                        noise_scale, window, max_spikes, surrogate, record, save, lengths=None, decays=False):
    """adaptive_forward, called as `run` calls every model's forward op (a `decays` keyword last):
    AdaptiveLIF takes time constants only (no leak modes), so decays must be False."""
    if decays:
        raise ValueError("AdaptiveLIF takes time constants (tau_mem, tau_adapt), not decays: decays must be False")
    return torch.ops.lif_cuda.adaptive_forward(
        input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt, noise, noise_key, dt, noise_scale, window,
        max_spikes, surrogate, record, save, lengths,
    )


def kernel_launches() -> int:
    """Fused kernels launched so far in this process (forward and backward, every device); 0 without
    the extension. A rejected call never moves it: the tests' tripwire for SPEC §6."""
    return _ext._C.kernel_launches() if _ext.loaded() else 0
