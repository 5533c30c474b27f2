"""Python glue for the compiled ops: fake (meta) kernels, the autograd formula, and a thin call.

The schemas live in csrc/ops.cpp; the device kernels in csrc/cpu and csrc/cuda. Everything here is
traceable by torch.compile: no data-dependent Python.
"""
import torch

from . import _ext

__all__ = ["SURROGATE_IDS", "lif_forward_op", "lif_backward_op"]

# Surrogate ids passed to the kernels (csrc/lif_core.h, enum Surrogate).
SURROGATE_IDS = {"StepPWL": 0, "PeriodicExponential": 1}

if _ext.loaded():

    @torch.library.register_fake("lif_cuda::lif_forward")
    def _lif_forward_fake(
        input, v0, alpha, threshold, bias, noise, noise_key, noise_scale, window, max_spikes, surrogate, record, save_u
    ):
        B, T, N = input.shape
        spikes = input.new_empty((B, T, N))
        # State (recorded membrane, final state, saved u) is in v0's dtype (float32 for half input).
        vmem = v0.new_empty((B, T, N)) if record else v0.new_empty((0,))
        v_final = v0.new_empty((B, N))
        u = v0.new_empty((B, T, N)) if save_u else v0.new_empty((0,))
        return spikes, vmem, v_final, u

    @torch.library.register_fake("lif_cuda::lif_backward")
    def _lif_backward_fake(grad_spikes, grad_vmem, grad_vfinal, u, v0, alpha, threshold, window, max_spikes, surrogate):
        B, T, N = u.shape
        return (
            grad_spikes.new_empty((B, T, N)),
            u.new_empty((B, N)),
            u.new_empty((N,)),
            u.new_empty((N,)),
            u.new_empty((N,)),
        )

    def _setup_context(ctx, inputs, output):
        (input, v0, alpha, threshold, bias, noise, noise_key, noise_scale, window, max_spikes, surrogate, record,
         save_u) = inputs
        _, _, _, u = output
        ctx.window = window
        ctx.max_spikes = max_spikes
        ctx.surrogate = surrogate
        ctx.record = record
        ctx.save_u = save_u
        ctx.has_noise = noise is not None
        ctx.input_dtype = input.dtype
        # Unused outputs get None, not (B,T,N) zeros to allocate, fill and read; u (and an
        # unrecorded, empty vmem) are internal, not differentiable.
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*((u,) if record else (output[1], u)))
        ctx.save_for_backward(u, v0, alpha, threshold)

    def _backward(ctx, grad_spikes, grad_vmem, grad_vfinal, grad_u):
        u, v0, alpha, threshold = ctx.saved_tensors
        if not ctx.save_u:
            raise RuntimeError(
                "lif_cuda: backward through lif_forward called with save_u=False; "
                "call it with save_u=True when gradients are needed"
            )
        if grad_spikes is None:
            grad_spikes = torch.zeros(u.shape, dtype=ctx.input_dtype, device=u.device)
        if not ctx.record or grad_vmem is None or grad_vmem.numel() == 0:
            grad_vmem = None
        noise_grad = ctx.has_noise and ctx.needs_input_grad[5]
        if noise_grad and grad_spikes.dtype != u.dtype:
            # Half-precision input with a float32 noise tensor that needs its gradient: dL/du is
            # wanted in float32 for the noise (SPEC §3: gz = U), rounded once for the input.
            grad_spikes = grad_spikes.to(u.dtype)
        g_in, g_v0, g_alpha, g_thr, g_bias = torch.ops.lif_cuda.lif_backward(
            grad_spikes, grad_vmem, grad_vfinal, u, v0, alpha, threshold,
            ctx.window, ctx.max_spikes, ctx.surrogate,
        )
        g_noise = g_in.clone() if noise_grad else None
        if g_in.dtype != ctx.input_dtype:
            g_in = g_in.to(ctx.input_dtype)
        return g_in, g_v0, g_alpha, g_thr, g_bias, g_noise, None, None, None, None, None, None, None

    torch.library.register_autograd("lif_cuda::lif_forward", _backward, setup_context=_setup_context)


def lif_forward_op(
    input, v0, alpha, threshold, bias, noise, noise_key, noise_scale, window, max_spikes, surrogate, record, save_u
):
    """The raw forward op: v0 (B,N), parameters (N,) in the compute dtype (float32 for half input),
    noise (B,T,N) or noise_key (CPU int64 (seed, offset)) for in-kernel noise."""
    return torch.ops.lif_cuda.lif_forward(
        input, v0, alpha, threshold, bias, noise, noise_key, noise_scale, window, max_spikes, surrogate, record, save_u
    )


def lif_backward_op(grad_spikes, grad_vmem, grad_vfinal, u, v0, alpha, threshold, window, max_spikes, surrogate):
    return torch.ops.lif_cuda.lif_backward(
        grad_spikes, grad_vmem, grad_vfinal, u, v0, alpha, threshold, window, max_spikes, surrogate
    )
