"""SpikeLinear: a torch.nn.Linear that keeps its spike-count input as bits or bytes for the backward
(SPEC §11).

nn.Linear keeps its input for the weight's gradient: 4 bytes per element in float32. A spike train
holds counts in {0, ..., max_count}, so 1 bit (max_count == 1) or 1 byte (max_count <= 255) holds it
exactly. The backward unpacks the counts into the input's dtype and computes the gradients with the
same ATen calls as autograd's formulas for nn.Linear, so they equal nn.Linear's bit for bit on the
same device. An input outside the promise is an error, never a silently wrong gradient: a
ValueError naming max_count on the CPU, a device-side assertion (no host sync) on CUDA.
"""
import torch
import torch.nn.functional as F
from torch import nn

from . import _ext
from . import ops as _ops  # noqa: F401  (registers the fake kernels of pack_counts, unpack_counts)

__all__ = ["SpikeLinear"]

_BIT_WEIGHTS = {}


def _bit_weights(device):
    w = _BIT_WEIGHTS.get(device)
    if w is None:
        w = _BIT_WEIGHTS[device] = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device)
    return w


def _promise_broken(max_count):
    return f"SpikeLinear: the input must hold spike counts in {{0, ..., max_count}} with max_count={max_count}"


def _pack_aten(input, max_count):
    """pack_counts in ATen passes: where the extension has no kernel for the device."""
    x = input.reshape(-1)
    if max_count == 1:
        ok = (x == 0) | (x == 1)
    else:
        ok = (x >= 0) & (x <= max_count) & (x == torch.trunc(x))
    ok = ok.all()
    if x.is_cuda:
        torch._assert_async(ok, _promise_broken(max_count))
    elif not bool(ok):
        raise ValueError(_promise_broken(max_count))
    if max_count > 1:
        return x.to(torch.uint8)
    bits = x.to(torch.uint8)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    return bits.view(-1, 8).mul_(_bit_weights(x.device)).sum(1, dtype=torch.uint8)


def _unpack_aten(packed, max_count, numel, dtype):
    if max_count > 1:
        return packed.to(dtype)
    bits = packed.unsqueeze(1).bitwise_and(_bit_weights(packed.device)).ne(0)
    return bits.view(-1)[:numel].to(dtype)


# The ATen passes as custom ops of their own, opaque to torch.compile as the fused ops are (their
# check's branch on a value would break a fullgraph trace).
@torch.library.custom_op("lif_cuda::pack_counts_aten", mutates_args=())
def _pack_fallback(input: torch.Tensor, max_count: int) -> torch.Tensor:
    return _pack_aten(input, max_count)


@_pack_fallback.register_fake
def _(input, max_count):
    n = input.numel()
    return input.new_empty(((n + 7) // 8 if max_count == 1 else n,), dtype=torch.uint8)


@torch.library.custom_op("lif_cuda::unpack_counts_aten", mutates_args=())
def _unpack_fallback(packed: torch.Tensor, max_count: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    return _unpack_aten(packed, max_count, numel, dtype)


@_unpack_fallback.register_fake
def _(packed, max_count, numel, dtype):
    return packed.new_empty((numel,), dtype=dtype)


def pack_counts(input: torch.Tensor, max_count: int) -> torch.Tensor:
    """The input's values as 1-bit (max_count == 1, 8 per byte, in memory order: bit j of byte i is
    element 8i + j) or 1-byte counts, after checking that every value is an integer in
    [0, max_count]: the fused op (one pass, csrc/cpu/counts.cpp, csrc/cuda/counts.cu) where the
    extension has a kernel for the device, else ATen passes with the same result."""
    if _ext.available(input.device.type):
        return torch.ops.lif_cuda.pack_counts(input, max_count)
    return _pack_fallback(input, max_count)


def unpack_counts(packed: torch.Tensor, max_count: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """pack_counts' inverse, as a flat tensor of `numel` values of `dtype`."""
    if _ext.available(packed.device.type):
        return torch.ops.lif_cuda.unpack_counts(packed, max_count, numel, dtype)
    return _unpack_fallback(packed, max_count, numel, dtype)


class _SpikeLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(input, weight, bias, max_count):
        return F.linear(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, max_count = inputs
        ctx.max_count = max_count
        ctx.in_shape = input.shape
        ctx.in_dtype = input.dtype
        ctx.has_bias = bias is not None
        # Only the weight's gradient reads the input: keep it packed only when that is wanted.
        packed = pack_counts(input, max_count) if weight.requires_grad else None
        ctx.save_for_backward(packed, weight)

    @staticmethod
    def backward(ctx, grad_output):
        packed, weight = ctx.saved_tensors
        out_features = grad_output.shape[-1]
        # The formulas autograd uses for nn.Linear (addmm / mm backward on the input flattened to
        # rows), so that every gradient equals nn.Linear's bit for bit.
        grad_rows = grad_output.reshape(-1, out_features)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_rows.mm(weight).view(ctx.in_shape)
        if ctx.needs_input_grad[1]:
            n = 1
            for d in ctx.in_shape:
                n *= d
            rows = unpack_counts(packed, ctx.max_count, n, ctx.in_dtype).view(-1, ctx.in_shape[-1])
            grad_weight = grad_rows.t().mm(rows)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_input, grad_weight, grad_bias, None


class SpikeLinear(nn.Linear):
    """A torch.nn.Linear (same parameters, state_dict and forward) whose input is spike counts in
    {0, 1, ..., max_count}, max_count <= 255. For the backward it keeps the input as bits
    (max_count == 1) or bytes instead of floats: 1/32 or 1/4 of nn.Linear's memory in float32, with
    gradients equal to nn.Linear's bit for bit. Under TorchScript it is a plain nn.Linear."""

    __constants__ = nn.Linear.__constants__ + ["max_count"]

    def __init__(self, in_features, out_features, bias=True, max_count=1, device=None, dtype=None):
        if isinstance(max_count, bool) or not isinstance(max_count, int):
            raise TypeError(f"max_count must be an int in [1, 255], got {type(max_count).__name__}")
        if not 1 <= max_count <= 255:
            raise ValueError(f"max_count must be an int in [1, 255], got {max_count}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.max_count = max_count

    def forward(self, input):
        if torch.jit.is_scripting() or input.dim() < 2 or not torch.is_grad_enabled():
            return F.linear(input, self.weight, self.bias)
        return _SpikeLinearFunction.apply(input, self.weight, self.bias, self.max_count)

    def extra_repr(self):
        return f"{super().extra_repr()}, max_count={self.max_count}"
