"""The spike function and its surrogate gradients (SPEC §2).

Each surrogate is a torch.autograd.Function: the multi-spike step forward, its surrogate backward,
and `kernel_id`, its number in the fused kernels (csrc's enum Surrogate). A new surrogate is a class
here, listed in FUSED, plus its two functions in C++: everything else looks it up from the class.
"""
import torch

__all__ = ["StepPWL", "PeriodicExponential", "FUSED", "NO_KERNEL", "kernel_id_of", "check_spike_fn"]

# The kernel id of a spike function without a fused kernel (a user's own autograd.Function).
NO_KERNEL = -1


def spike_counts(x, threshold, max_spikes_per_dt):
    # s = min((x >= thr) ? floor(x / thr) : 0, M). A select, not a multiply by the comparison.
    s = torch.where(x >= threshold, torch.floor(x / threshold), torch.zeros_like(x))
    return torch.clamp(s, max=float(max_spikes_per_dt))


class _MultiSpike(torch.autograd.Function):
    """The forward every surrogate shares; a subclass adds its backward and kernel_id."""

    kernel_id = NO_KERNEL

    @staticmethod
    def forward(ctx, x, threshold, window=0.5, max_spikes_per_dt=2.0**16):
        ctx.save_for_backward(x, threshold)
        ctx.window = float(window)
        ctx.max_spikes = float(max_spikes_per_dt)
        return spike_counts(x, threshold, max_spikes_per_dt)


class StepPWL(_MultiSpike):
    """Multi-spike Heaviside with a piece-wise linear surrogate: ds/du = 1/thr where
    u >= thr - window, else 0 (the clamp to max_spikes_per_dt is passed straight through)."""

    kernel_id = 0

    @staticmethod
    def backward(ctx, grad_output):
        x, threshold = ctx.saved_tensors
        mask = x >= (threshold - ctx.window)
        grad_x = grad_threshold = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_output / threshold * mask
        if ctx.needs_input_grad[1]:
            grad_threshold = -x * grad_output / (threshold**2) * mask
        return grad_x, grad_threshold, None, None


class PeriodicExponential(_MultiSpike):
    """Same forward as StepPWL; the surrogate is a periodic exponential bump around every
    threshold multiple (SPEC §2)."""

    kernel_id = 1

    @staticmethod
    def backward(ctx, grad_output):
        x, threshold = ctx.saved_tensors
        vs = x - threshold / 2
        k = torch.clamp(torch.floor(vs / threshold), max=ctx.max_spikes - 1)
        vp = vs - k * threshold
        vn = torch.where(x < threshold, vs, vp)
        pdf = torch.exp(-torch.abs(vn - threshold / 2) / ctx.window) / threshold
        grad_x = grad_threshold = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_output * pdf
        if ctx.needs_input_grad[1]:
            grad_threshold = -(grad_output * pdf) * x / threshold
        return grad_x, grad_threshold, None, None


# The surrogates the fused kernels implement.
FUSED = (StepPWL, PeriodicExponential)
FUSED_NAMES = " and ".join(cls.__name__ for cls in FUSED)


def kernel_id_of(spike_generation_fn) -> int:
    """The fused kernels' id of this spike function, or NO_KERNEL. By identity: a subclass of
    StepPWL may have another backward, and torch.compile can neither hash nor issubclass() an
    autograd.Function class."""
    for cls in FUSED:
        if spike_generation_fn is cls:
            return cls.kernel_id
    return NO_KERNEL


def check_spike_fn(fn):
    """spike_generation_fn must be a torch.autograd.Function subclass (one of FUSED or the user's
    own): anything else would fail deep inside the time loop."""
    if not (isinstance(fn, type) and issubclass(fn, torch.autograd.Function)):
        raise TypeError(
            f"spike_generation_fn must be a torch.autograd.Function subclass such as lif_cuda.StepPWL, got {fn!r}"
        )
