"""TimeChunked: a stack of layers trained on long sequences a chunk of time steps at a time (SPEC §11:
what training keeps, beyond what one layer's call can save).

A stack run by autograd keeps what each layer's backward needs for every time step, and while a
training step runs it also holds (B, T, N) tensors between the layers: the Linear outputs, the
spikes, the gradients flowing back. However little each op keeps (1 bit per element), those grow
with T. TimeChunked runs the forward one chunk of `chunk` steps at a time without building a graph,
keeping only the neuron layers' state at the start of each chunk (and the random number generators'
states, for noise and dropout). Its backward runs the chunks again from the last to the first, each
forward with its graph then at once backward, handing the gradient of the neuron state at a chunk's
start to the chunk before it: full backpropagation through time, nothing truncated; what is alive at
once is one chunk's graph and the chunk-start states (gradient checkpointing along time).

What is exact: the state is carried from chunk to chunk exactly, so the spikes and the final state
are the bits of the layers run on one chunk after another; those of one call over the whole sequence
where no other layer's rounding depends on how many rows it is given and no noise is drawn (a neuron's
noise, like dropout, is drawn per chunk, as a call per chunk draws it). The gradients flow back through
the same steps; a parameter's gradient is the sum of its chunks' gradients (added in float64, rounded
once), not one sum over all steps as the unchunked stack's matmul or gradient sum adds them, so it
equals the unchunked gradient to float rounding, not bit for bit. The cost is a second forward.

Every other layer must act on each time step alone (Linear, SpikeLinear, an activation, dropout):
a layer that mixes time steps (a convolution along T) would see only a chunk.
"""
import torch
from torch import nn

from ._checks import to_lengths
from .neurons import NeuronLayer

__all__ = ["TimeChunked"]

_OUTPUTS = ("sequence", "sum")


class TimeChunked(nn.Module):
    """`TimeChunked(*layers, chunk=128, output="sequence")`: the layers in sequence (as nn.Sequential;
    one nn.Sequential may be given instead), run over (B, T, F) input in chunks of `chunk` time steps.

    The neuron layers (LIFNeuron, SynapticLIF, AHPSynapticLIF, AdaptiveLIF) must be members of the
    stack itself: the stack carries their state from chunk to chunk, starting from the state each
    layer holds and leaving each the state after the last step, as a call of the layer would.

    output: "sequence" returns the last layer's output (B, T, ...); "sum" returns its sum over time
    (B, ...) (spike counts, exact), without ever holding the sequence: for losses on spike counts or
    rates, whose training then keeps nothing that grows with T but the chunk-start states.
    forward(x, lengths=None): x (B, T, F), a floating tensor, or bool/integer spikes (converted to the
    parameters' dtype a chunk at a time); lengths as for the neuron layers (SPEC §8).
    preserve_rng_state (default True): the backward's second forward draws the same noise and dropout
    as the first (False: a little faster, for a stack that draws none).

    Eager mode: under torch.compile the stack runs eagerly (a graph break); TorchScript cannot
    script it (script its layers instead)."""

    def __init__(self, *layers, chunk=128, output="sequence", preserve_rng_state=True):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], nn.Sequential):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("TimeChunked needs at least one layer")
        first_at = {}  # a neuron layer's position in the stack
        for i, m in enumerate(layers):
            if not isinstance(m, nn.Module):
                raise TypeError(f"layer {i} must be a torch.nn.Module, got {type(m).__name__}")
            if isinstance(m, NeuronLayer):
                # Its second call would start from the state its first left after the whole
                # sequence: a state no chunk has.
                if id(m) in first_at:
                    raise ValueError(
                        f"layers {first_at[id(m)]} and {i} are the same neuron layer: TimeChunked carries one state "
                        "per neuron layer in the stack, so give each position its own layer"
                    )
                first_at[id(m)] = i
            for name, sub in m.named_modules():
                if name and isinstance(sub, NeuronLayer):
                    raise ValueError(
                        f"layer {i} holds the neuron layer {name!r} inside it: TimeChunked carries the state of "
                        "neuron layers that are members of the stack itself, so put it in the stack's sequence"
                    )
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an int >= 1 (time steps), got {chunk!r}")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be 'sequence' or 'sum', got {output!r}")
        self.layers = nn.Sequential(*layers)
        self.chunk = chunk
        self.output = output
        self.preserve_rng_state = bool(preserve_rng_state)

    def extra_repr(self):
        return f"chunk={self.chunk}, output={self.output!r}"

    def reset_state(self):
        """Every neuron layer's state back to zero."""
        for m in self.layers:
            if isinstance(m, NeuronLayer):
                m.reset_state()
        return self

    @torch.compiler.disable
    def forward(self, x, lengths=None):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(f"input must have shape (B, T, F), got {tuple(x.shape)}")
        if x.is_complex():
            raise TypeError(f"input must be a floating-point tensor or spikes (bool or integer), got {x.dtype}")
        B, T = x.shape[0], x.shape[1]
        if lengths is not None:
            # Kept on the host: each chunk's layers copy theirs to the device without a sync.
            lengths = to_lengths(lengths, B, T, x.device, checked_by_op=False).cpu()
        neurons = [m for m in self.layers if isinstance(m, NeuronLayer)]
        for m in neurons:
            if getattr(m, m.model.state[0]).dim() == 2:
                m._check_state(B)
        # The layers' own state buffers are written at the end: the chunks start from a copy.
        initial = [tuple(getattr(m, name).clone() for name in m.model.state) for m in neurons]
        params = [p for p in self.parameters() if p.requires_grad]
        if torch.is_grad_enabled() and (x.requires_grad or params):
            return _Chunks.apply(self, lengths, initial, x, *params)
        with torch.no_grad():
            out, final = self._forward_chunks(x, lengths, initial, None)
        self._keep_state(final)
        return out

    # ------------------------------------------------------------------------------- the chunks

    def _bounds(self, T):
        return [(t0, min(t0 + self.chunk, T)) for t0 in range(0, T, self.chunk)] or [(0, 0)]

    def _chunk_input(self, x, t0, t1):
        xc = x[:, t0:t1]
        if not xc.is_floating_point():  # spikes as bool or integers: the parameters' dtype
            p = next((p for p in self.parameters() if p.is_floating_point()), None)
            xc = xc.to(p.dtype if p is not None else torch.get_default_dtype())
        return xc

    def _run_chunk(self, xc, t0, t1, lengths, state):
        """The stack on one chunk's input from the neuron layers' `state`: (output, state after)."""
        if lengths is not None:
            lengths = (lengths - t0).clamp(0, t1 - t0)
        h, after, k = xc, [], 0
        for m in self.layers:
            if isinstance(m, NeuronLayer):
                h, final = m._call_from(h, state[k], lengths)
                after.append(final)
                k += 1
            else:
                h = m(h)
        return h, after

    def _forward_chunks(self, x, lengths, state, saved):
        """Every chunk without a graph; `saved` (a list, or None) collects each chunk's starting
        state and random number generators' states. Returns (output, final state)."""
        T = x.shape[1]
        out = total = None
        for t0, t1 in self._bounds(T):
            if saved is not None:
                saved.append((state, self._rng_state(x.device)))
            h, state = self._run_chunk(self._chunk_input(x, t0, t1), t0, t1, lengths, state)
            if self.output == "sum":
                part = h.sum(1, dtype=torch.float64 if h.dtype != torch.float64 else None)
                total = part if total is None else total + part
            else:
                if out is None:
                    out = h.new_empty((h.shape[0], T, *h.shape[2:]))
                out[:, t0:t1] = h
        if self.output == "sum":
            out = total.to(h.dtype)
        return out, state

    def _keep_state(self, final):
        k = 0
        for m in self.layers:
            if isinstance(m, NeuronLayer):
                if final[k] and final[k][0].shape[0] > 0:
                    m._keep_state(final[k])
                k += 1

    def _rng_state(self, device):
        if not self.preserve_rng_state:
            return None
        return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


class _Chunks(torch.autograd.Function):
    """The stack over every chunk; backward: each chunk again with its graph, last chunk first."""

    @staticmethod
    def forward(ctx, stack, lengths, initial, x, *params):
        saved = []
        out, final = stack._forward_chunks(x, lengths, initial, saved)
        stack._keep_state(final)
        # Every chunk's starting state and generator states through save_for_backward: version
        # checked, and seen by saved-tensor hooks (what a step keeps is counted, offloaded, ...).
        kept = [t for state, rng in saved for t in (*_flat(state), *(r for r in rng or () if r is not None))]
        ctx.stack, ctx.lengths = stack, lengths
        ctx.layout = [([len(st) for st in state], rng and tuple(r is not None for r in rng)) for state, rng in saved]
        ctx.n_params = len(params)
        ctx.save_for_backward(x, *params, *kept)
        return out

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # its gradients carry no graph: a second order would come out zero
            raise RuntimeError(
                "lif_cuda.TimeChunked is not differentiable twice: second-order gradients (create_graph=True) "
                "are not supported"
            )
        stack, lengths = ctx.stack, ctx.lengths
        x, *rest = ctx.saved_tensors
        params, kept = rest[: ctx.n_params], iter(rest[ctx.n_params :])
        saved = []
        for counts, rng in ctx.layout:
            state = [tuple(next(kept) for _ in range(n)) for n in counts]
            saved.append((state, rng and tuple(next(kept) if r else None for r in rng)))
        need_x = ctx.needs_input_grad[3] and x.is_floating_point()
        trained = [i for i, p in enumerate(params) if ctx.needs_input_grad[4 + i]]
        sums = [None] * len(params)
        gx = torch.zeros_like(x) if need_x else None
        carry = None  # the gradient on the state after the chunk, from the chunk after it
        bounds = stack._bounds(x.shape[1])
        for c in range(len(bounds) - 1, -1, -1):
            t0, t1 = bounds[c]
            state, rng = saved[c]
            with torch.enable_grad(), torch.random.fork_rng(devices=_cuda(x), enabled=rng is not None):
                if rng is not None:
                    torch.set_rng_state(rng[0])
                    if rng[1] is not None:
                        torch.cuda.set_rng_state(rng[1], x.device)
                leaves = [tuple(s.detach().requires_grad_(c > 0) for s in st) for st in state]
                xc = stack._chunk_input(x, t0, t1)
                if need_x:
                    xc = xc.detach().requires_grad_()
                h, after = stack._run_chunk(xc, t0, t1, lengths, leaves)
            g = grad[:, t0:t1] if stack.output == "sequence" else grad.unsqueeze(1).expand(-1, t1 - t0, *grad.shape[1:])
            outs, gouts = [h], [g]
            if carry is not None:
                for s, gs in zip(_flat(after), carry):
                    if gs is not None:
                        outs.append(s)
                        gouts.append(gs)
            keep = [i for i, o in enumerate(outs) if o.requires_grad]
            state_leaves = _flat(leaves) if c > 0 else []
            inputs = [params[i] for i in trained] + state_leaves + ([xc] if need_x else [])
            if not keep or not inputs:
                carry = None
                continue
            grads = torch.autograd.grad([outs[i] for i in keep], inputs, [gouts[i] for i in keep], allow_unused=True)
            for i, gp in zip(trained, grads):
                if gp is not None:  # every float dtype summed in float64 (half would round at each chunk)
                    gp = gp.double()
                    sums[i] = gp if sums[i] is None else sums[i] + gp
            carry = grads[len(trained) : len(trained) + len(state_leaves)] if c > 0 else None
            if need_x and grads[-1] is not None:
                gx[:, t0:t1] = grads[-1]
        pgrads = [None if s is None else s.to(p.dtype) for s, p in zip(sums, params)]
        return (None, None, None, gx, *pgrads)


def _flat(states):
    return [s for st in states for s in st]


def _cuda(x):
    return [x.device] if x.device.type == "cuda" else []
