"""The implementations the benchmarks compare, each behind one small adapter.

Every adapter builds an `nn.Module` whose forward takes the input in the implementation's own
layout ((B,T,N), or (T,B,N) for the time-major libraries), starts from a zero membrane on every
call, and returns the spikes in that same layout. Inputs are put into each library's layout before
the clock starts: a user of that library keeps the data that way.

The peers do NOT run exactly our neuron. Each is configured as close to it as its API allows; what
still differs is written in `Impl.equation` and printed with every result. In short: our neuron
(and Rockpool's, which we replace) emits several spikes per step when the membrane is several
thresholds high; snnTorch, SpikingJelly and Norse emit at most one; Norse resets to zero instead
of subtracting the threshold. Only Rockpool is expected to give identical spikes, and the
benchmarks check that it does.
"""
import importlib
import math

import torch
from torch import nn

import lif_cuda

DT = 1e-3  # s
TAU_MEM = 20e-3  # s, lif_cuda's and Rockpool's default
THRESHOLD = 1.0
ALPHA = math.exp(-DT / TAU_MEM)  # membrane decay per step, ~0.9512

OURS = (
    "u = a*w + I + b; s = min(floor(u/thr), M) (several spikes per step); w = u - s*thr; "
    "a = exp(-dt/tau); StepPWL surrogate; trainable per-neuron tau, thr, b (their gradients are computed)"
)


class Impl:
    """One implementation: how to check it is there, build it and feed it."""

    key = ""
    label = ""
    package = None  # distribution name, for its version
    modules = ()  # what must import
    devices = ("cpu", "cuda")
    time_major = False
    equation = ""
    warmup = 1  # untimed calls before the timed ones
    memory_warmup = 0  # calls before the peak-memory call (only what must be done once: compiling)

    def unavailable(self, device):
        """None when it can run on `device`, else why not."""
        dev = torch.device(device).type
        if dev not in self.devices:
            return f"{self.label} runs on {'/'.join(self.devices)} only"
        for m in self.modules:
            try:
                importlib.import_module(m)
            except Exception as exc:  # ImportError, or a peer broken beside this torch
                return f"{m} does not import ({type(exc).__name__}: {exc})".splitlines()[0][:200]
        return None

    def skip(self, shape, config):
        """None, or why this shape is not run (e.g. too long to compile)."""
        return None

    def layer(self, n, device):
        raise NotImplementedError

    def native(self, x_btn):
        """The input in this implementation's layout, made contiguous (outside the clock)."""
        return x_btn.transpose(0, 1).contiguous() if self.time_major else x_btn

    def to_btn(self, s):
        return s.transpose(0, 1) if self.time_major else s

    def version(self):
        from bench.engine import package_version

        return package_version(self.package) if self.package else None


# ------------------------------------------------------------------------------------ lif_cuda
class _OursLayer(nn.Module):
    def __init__(self, n, backend, frozen=False):
        super().__init__()
        self.lif = lif_cuda.LIFNeuron(n, tau_mem=TAU_MEM, threshold=THRESHOLD, dt=DT, backend=backend)
        if frozen:
            self.lif.tau_mem.requires_grad_(False)
            self.lif.threshold.requires_grad_(False)

    def forward(self, x):
        self.lif.reset_state()
        return self.lif(x)


class Fused(Impl):
    key = "fused"
    label = "lif_cuda fused"
    package = "lif_cuda"
    modules = ("lif_cuda",)
    equation = OURS

    def unavailable(self, device):
        if not lif_cuda.fused_available(torch.device(device)):
            why = "extension not loaded" if not lif_cuda.extension_loaded() else "no kernel for this device"
            return f"lif_cuda's fused op is not available on {device} ({why})"
        return None

    def layer(self, n, device):
        return _OursLayer(n, "fused").to(device)


class FusedFrozen(Fused):
    """The fused op with tau_mem and threshold frozen (bias trains): it keeps the window mask, 1 bit
    per element, instead of u (SPEC §11), and its backward reads that."""

    key = "fused_frozen"
    label = "lif_cuda fused, tau and threshold frozen"
    equation = OURS.replace("trainable per-neuron tau, thr, b", "tau and thr fixed, b trainable")

    def layer(self, n, device):
        return _OursLayer(n, "fused", frozen=True).to(device)


class FusedNoPool(Fused):
    """The fused op with the CPU output pool off (lif_cuda.output_pool(0)) in its worker process:
    every large output is fresh memory, page-faulted in on first touch (what main did before)."""

    key = "fused_nopool"
    label = "lif_cuda fused, no output pool"
    devices = ("cpu",)

    def layer(self, n, device):
        lif_cuda.output_pool(0)
        return super().layer(n, device)


class Reference(Impl):
    key = "reference"
    label = "lif_cuda reference"
    package = "lif_cuda"
    modules = ("lif_cuda",)
    equation = OURS + " (pure PyTorch, one Python step per time step)"

    def layer(self, n, device):
        return _OursLayer(n, "reference").to(device)


class _CompiledLayer(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.lif = lif_cuda.LIFNeuron(n, tau_mem=TAU_MEM, threshold=THRESHOLD, dt=DT, backend="reference")
        self.compiled = torch.compile(self.lif, dynamic=False)

    def forward(self, x):
        self.lif.reset_state()
        return self.compiled(x)


class Compiled(Impl):
    key = "compiled"
    label = "torch.compile(reference)"
    package = "lif_cuda"
    modules = ("lif_cuda",)
    equation = OURS + " (the reference under torch.compile; its time loop is unrolled T times)"
    warmup = 2  # the first call compiles; the second shows a recompile if there is one
    memory_warmup = 1

    def skip(self, shape, config):
        T = shape[1]
        cap = config.get("compile_max_t", 100)
        if T > cap:
            return f"T={T} > --compile-max-t {cap}: the unrolled loop takes too long to compile"
        return None

    def layer(self, n, device):
        import torch._dynamo

        # One compiled graph per (shape, grad mode): allow more than the default 8.
        for name in ("cache_size_limit", "recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))
        return _CompiledLayer(n).to(device)


# ------------------------------------------------------------------------------------- peers
class _RockpoolLayer(nn.Module):
    def __init__(self, n):
        super().__init__()
        from rockpool.nn.modules import LIFNeuronTorch

        self.lif = LIFNeuronTorch((n,), tau_mem=TAU_MEM, threshold=THRESHOLD, bias=0.0, dt=DT)

    def forward(self, x):
        self.lif.reset_state()
        out, _, _ = self.lif(x)
        return out


class Rockpool(Impl):
    key = "rockpool"
    label = "Rockpool LIFNeuronTorch"
    package = "rockpool"
    modules = ("rockpool.nn.modules",)
    equation = "the same equations as lif_cuda (lif_cuda.LIFNeuron is a drop-in for it); spikes are checked to be equal"

    def layer(self, n, device):
        return _RockpoolLayer(n).to(device)


class _SnnTorchLayer(nn.Module):
    def __init__(self, n):
        super().__init__()
        import snntorch

        self.lif = snntorch.Leaky(
            beta=ALPHA, threshold=THRESHOLD, reset_mechanism="subtract", reset_delay=False
        )

    def forward(self, x):  # (T,B,N)
        self.lif.reset_mem()
        # unbind, not x[t]: indexing one step at a time makes autograd build a zero (T,B,N)
        # gradient per step (quadratic in T); unbind is the fast way to write this loop.
        return torch.stack([self.lif(xt)[0] for xt in x.unbind(0)])


class SnnTorch(Impl):
    key = "snntorch"
    label = "snnTorch Leaky"
    package = "snntorch"
    modules = ("snntorch",)
    time_major = True
    equation = (
        "Leaky(beta=a, threshold=1, reset_mechanism='subtract', reset_delay=False): u = a*w + I; "
        "s = H(u - thr) (at most one spike per step); w = u - s*thr; no bias; ATan surrogate; a, thr fixed"
    )

    def layer(self, n, device):
        return _SnnTorchLayer(n).to(device)


class _SpikingJellyLayer(nn.Module):
    def __init__(self, n):
        super().__init__()
        from spikingjelly.activation_based import neuron

        # decay_input=False: h = v - v/tau + x; so 1 - 1/tau = a gives our decay.
        self.lif = neuron.LIFNode(
            tau=1.0 / (1.0 - ALPHA), decay_input=False, v_threshold=THRESHOLD, v_reset=None, step_mode="m"
        )

    def forward(self, x):  # (T,B,N)
        self.lif.reset()
        return self.lif(x)


class SpikingJelly(Impl):
    key = "spikingjelly"
    label = "SpikingJelly LIFNode"
    package = "spikingjelly"
    modules = ("spikingjelly.activation_based.neuron",)
    time_major = True
    equation = (
        "LIFNode(tau=1/(1-a), decay_input=False, v_reset=None, step_mode='m'): h = w - w/tau + I; "
        "s = H(h - thr) (at most one spike per step); w = h - s*thr (soft reset); no bias; Sigmoid "
        "surrogate. CPU: its torch op (Python time loop, hand-written backward); CUDA: its own "
        "CUDA/Triton kernels, picked by SJ_LIF_CUDA_IMPLEMENTATION (default auto)"
    )

    def layer(self, n, device):
        return _SpikingJellyLayer(n).to(device)


class _NorseLayer(nn.Module):
    def __init__(self, n):
        super().__init__()
        import norse.torch as norse

        p = norse.LIFParameters(
            tau_syn_inv=torch.as_tensor(1.0 / DT),
            tau_mem_inv=torch.as_tensor((1.0 - ALPHA) / DT),
            v_leak=torch.as_tensor(0.0),
            v_th=torch.as_tensor(THRESHOLD),
            v_reset=torch.as_tensor(0.0),
        )
        self.lif = norse.LIF(p=p, dt=DT)
        self.gain = 1.0 / (1.0 - ALPHA)

    def forward(self, x):  # (T,B,N)
        spikes, _ = self.lif(x * self.gain)
        return spikes


class Norse(Impl):
    key = "norse"
    label = "Norse LIF"
    package = "norse"
    modules = ("norse.torch",)
    time_major = True
    equation = (
        "LIF with tau_syn_inv=1/dt (the synaptic current passes straight through) and "
        "tau_mem_inv=(1-a)/dt: v = a*v + (1-a)*I', input pre-scaled I' = I/(1-a) (one extra "
        "multiply, timed); s = H(v - thr) (at most one spike per step); reset to 0, not "
        "subtractive (Norse has no subtractive reset); SuperSpike surrogate"
    )

    def layer(self, n, device):
        return _NorseLayer(n).to(device)


class _ExodusLayer(nn.Module):
    def __init__(self, n):
        super().__init__()
        import sinabs.activation as sa
        from sinabs.exodus.layers import LIF

        self.lif = LIF(
            tau_mem=TAU_MEM / DT,
            spike_threshold=THRESHOLD,
            spike_fn=sa.MultiSpike,
            reset_fn=sa.MembraneSubtract(),
            norm_input=False,
        )

    def forward(self, x):
        self.lif.reset_states()
        return self.lif(x)


class Exodus(Impl):
    key = "exodus"
    label = "sinabs-exodus LIF"
    package = "sinabs-exodus"
    modules = ("sinabs.exodus.layers",)
    devices = ("cuda",)
    equation = (
        "LIF(tau_mem=tau/dt, MultiSpike, MembraneSubtract, norm_input=False): v = a*v + I; several "
        "spikes per step; subtractive reset; no bias; SingleExponential surrogate; CUDA kernels"
    )

    def layer(self, n, device):
        return _ExodusLayer(n).to(device)


IMPLS = {
    cls.key: cls()
    for cls in (Fused, FusedFrozen, FusedNoPool, Reference, Compiled, Rockpool, SnnTorch, SpikingJelly, Norse, Exodus)
}
PEERS = ("rockpool", "snntorch", "spikingjelly", "norse", "exodus")


def select(keys):
    """Impl objects for a list of keys (or 'all'), in the canonical order."""
    if keys in (None, "all", ["all"]):
        return list(IMPLS.values())
    if isinstance(keys, str):
        keys = [k.strip() for k in keys.split(",") if k.strip()]
    bad = [k for k in keys if k not in IMPLS]
    if bad:
        raise ValueError(f"unknown implementation(s) {bad}; choose from {list(IMPLS)}")
    return [impl for key, impl in IMPLS.items() if key in keys]
