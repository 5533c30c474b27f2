"""Rockpool drop-ins: `LIFNeuronTorch` and `LIFTorch`, Rockpool's modules of those names running the
fused kernels.

    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LinearTorch
    from lif_cuda.rockpool import LIFNeuronTorch   # instead of rockpool.nn.modules.LIFNeuronTorch

    net = Sequential(LinearTorch((16, 64)), LIFNeuronTorch(64, tau_mem=0.02))
    out, state, record = net(x, record=True)       # Rockpool's evolve API; torch autograd as usual

It is a Rockpool `TorchModule` with Rockpool's constructor, parameter families (`taus`, `thresholds`,
`bias`), `vmem` state and evolve/forward semantics, and gives the same spikes, records and
gradients as Rockpool's own (docs/ecosystem.md). Needs the `rockpool` extra.

`LIFTorch` (synaptic currents, optional recurrent weights: SPEC §7) is Rockpool's `LIFTorch` itself,
subclassed: its constructor, leak modes ("taus", "decays", "bitshifts"), parameters and families
(`weights` w_rec; `taus` tau_mem and tau_syn, `decays` alpha and beta, or `bitshifts` dash_mem and
dash_syn; `bias`, `thresholds`), states (`vmem`, `isyn`, `spikes`), evolve and graph export are
Rockpool's; only `forward` runs on lif_cuda's fused op (lif_cuda.synaptic_evolve).

`aLIFTorch` (LIFTorch with an after-hyperpolarisation current: SPEC §9) is Rockpool's `aLIFTorch`
subclassed the same way, in the same three leak modes: its parameters `w_ahp` (`weights`) and
`tau_ahp` (`taus`) and state `iahp` are Rockpool's; `forward` runs on the fused op
(lif_cuda.functional.ahp_synaptic_evolve).
"""
import numpy as np
import torch

from . import StepPWL, lif_evolve, synaptic_evolve
from .functional import ahp_synaptic_evolve
from .surrogates import FUSED, check_spike_fn

try:
    import rockpool.parameters as rp
    from rockpool.nn.modules.torch import ahp_lif_torch as _rp_alif
    from rockpool.nn.modules.torch import lif_neuron_torch as _rp_lif_neuron
    from rockpool.nn.modules.torch import lif_torch as _rp_lif
    from rockpool.nn.modules.torch.torch_module import TorchModule
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lif_cuda.rockpool needs Rockpool, which could not be imported "
        f"({exc}); install it with: pip install 'lif_cuda[rockpool]'"
    ) from exc

__all__ = ["LIFNeuronTorch", "LIFTorch", "aLIFTorch"]

# Rockpool's surrogate classes of our surrogates' names compute what ours do (SPEC §2); they run on
# the fused kernels.
_SAME_SURROGATE = {
    getattr(module, ours.__name__): ours
    for module in (_rp_lif_neuron, _rp_lif)
    for ours in FUSED
    if hasattr(module, ours.__name__)
}
_BACKENDS = ("auto", "fused", "reference")


def _to_float_tensor(x):
    return torch.as_tensor(x, dtype=torch.float)


def _check_extras(backend, spike_generation_fn):
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    check_spike_fn(spike_generation_fn)


def _rockpool_noise(module, shape, device, dtype):
    """The very draw Rockpool makes (float32, on `device`), so that seeded runs agree."""
    zeta = module.noise_std * torch.sqrt(torch.tensor(module.dt))
    return (zeta * torch.randn(shape, device=device)).to(dtype)


def _batched_input(module, input_data):
    """(x (B,T,N) in the parameters' dtype, that dtype), by Rockpool's shape rules and error messages."""
    dtype = module.threshold.dtype  # every leak mode has it (tau_mem is computed in the others)
    if not isinstance(input_data, torch.Tensor):
        input_data = torch.as_tensor(input_data, dtype=dtype)
    x, _ = module._auto_batch(input_data)
    return x.to(dtype), dtype


def _spike_fn_class(module):
    """The spike function's class: Rockpool stores the Function's `apply`, bound to its class."""
    fn = module.spike_generation_fn
    cls = getattr(fn, "__self__", fn)
    return _SAME_SURROGATE.get(cls, cls)


class LIFNeuronTorch(TorchModule):
    """Leaky integrate-and-fire neurons with multi-spike output and a subtractive reset, as
    Rockpool's `LIFNeuronTorch`: v <- exp(-dt/tau_mem) * v + I + noise + bias; s = min(floor(v/thr),
    max_spikes_per_dt) where v >= thr; v <- v - s * thr. Input (B,T,N), (T,N) or (..., 1).

    `backend` ("auto", "fused" or "reference") picks the implementation as in `lif_cuda.LIFNeuron`.
    Noise (noise_std > 0) is drawn with torch.randn exactly as Rockpool draws it, so a seeded run
    matches Rockpool's. `learning_window` and `max_spikes_per_dt` are kept as Python floats.
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
        *args,
        backend="auto",
        **kwargs,
    ):
        if np.size(shape) == 1:
            shape = (np.array(shape).item(),)
        if np.size(shape) > 1:
            raise ValueError(f"shape must have only one dimension for LIFNeuronTorch, got {shape}")
        _check_extras(backend, spike_generation_fn)
        super().__init__(*args, shape=shape, spiking_input=False, spiking_output=True, **kwargs)
        n = self.size_out

        self.n_neurons = rp.SimulationParameter(n)
        self.noise_std = rp.SimulationParameter(noise_std, cast_fn=float)
        self.tau_mem = rp.Parameter(
            tau_mem,
            family="taus",
            shape=[(n,), ()],
            init_func=lambda s: torch.ones(s) * 20e-3,
            cast_fn=_to_float_tensor,
        )
        self.threshold = rp.Parameter(
            threshold, family="thresholds", shape=[(n,), ()], init_func=torch.ones, cast_fn=_to_float_tensor
        )
        self.bias = rp.Parameter(bias, family="bias", shape=[(n,), ()], init_func=torch.zeros, cast_fn=_to_float_tensor)
        self.dt = rp.SimulationParameter(dt, cast_fn=float)
        self.vmem = rp.State(shape=n, init_func=torch.zeros, cast_fn=_to_float_tensor)
        # Stored as Rockpool stores it (the Function's `apply`); the class is recovered per call.
        self.spike_generation_fn = rp.SimulationParameter(spike_generation_fn.apply)
        self.max_spikes_per_dt = rp.SimulationParameter(max_spikes_per_dt, cast_fn=float)
        self.learning_window = rp.SimulationParameter(learning_window, cast_fn=float)
        self.backend = rp.SimulationParameter(backend)

        self._record_dict = {}
        self._record = False

    _spike_fn_class = _spike_fn_class

    def evolve(self, input_data, record: bool = False):
        """Rockpool's low-level API: (spikes, state dict, record dict with "vmem" and "spikes")."""
        self._record = record
        output, _, _ = super().evolve(input_data, record)
        record_dict = self._record_dict if record else {}
        self._record_dict = {}  # hold no graph between calls
        return output, self.state(), record_dict

    def forward(self, input_data):
        """Spikes (B,T,N); the membrane state `vmem` becomes batch row 0's final membrane."""
        x, dtype = _batched_input(self, input_data)
        B, T, N = x.shape
        noise = _rockpool_noise(self, (B, T, N), x.device, dtype) if self.noise_std > 0 else None
        # A snapshot: backward may hold v0 while the state is updated in place below.
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
            spike_generation_fn=self._spike_fn_class(),
            record=self._record,
            backend=self.backend,
        )
        if self._record:
            self._record_dict = {"vmem": vmem, "spikes": spikes}
        # Rockpool keeps batch row 0, detached, as the new state.
        if B > 0:
            self.vmem.copy_(v_final[0].detach())
        return spikes


_NOISE_MODES = ("torch", "kernel")


# Eager even under torch.compile: Inductor would fuse these ops and their backward and round
# differently from eager (and Rockpool); the drop-in's graph breaks in Rockpool's code anyway.
@torch.compiler.disable
def _bitshift_decay(dash):
    """A Xylo bitshift's decay, 1 - 1/2**dash, by the torch ops Rockpool's bitshift_to_decay runs
    (pow, reciprocal times 1, rsub), so that it has Rockpool's bits; autograd chains to `dash`."""
    return 1 - 1 / (2**dash)


def _leak(module):
    """(the leak arguments of synaptic_evolve, its leak_mode) for a module's leak mode: the time
    constants as they are, the decays alpha and beta as they are, or the decays of the bitshifts."""
    if module.leak_mode == "taus":
        return (module.tau_mem, module.tau_syn), "taus"
    if module.leak_mode == "decays":
        return (module.alpha, module.beta), "decays"
    return (_bitshift_decay(module.dash_mem), _bitshift_decay(module.dash_syn)), "decays"


def _name_the_bitshift(exc):
    """A refused decay of a bitshift named by the bitshift it came from: alpha = 1 - 1/2**dash_mem is
    in [0, 1] exactly where dash_mem >= 0 (and so for beta and dash_syn)."""
    text = str(exc)
    for decay, dash in (("alpha", "dash_mem"), ("beta", "dash_syn")):
        if text.startswith(decay + " "):
            return ValueError(f"{dash} must be >= 0 everywhere (its decay 1 - 1/2**{dash} must be in [0, 1]): {text}")
    return None


def _synaptic_prologue(module, input_data):
    """(input (B,T,N*S), its compute dtype, a Rockpool-drawn noise tensor or None, the in-kernel noise
    std) for a synaptic drop-in's forward."""
    x, dtype = _batched_input(module, input_data)
    B, T, _ = x.shape
    noise, noise_std = None, 0.0
    if module.noise_std > 0:
        if module.noise == "torch":  # on the state's device, as Rockpool draws it
            noise = _rockpool_noise(module, (B, T, module.size_out), module.vmem.device, dtype)
        else:
            noise_std = module.noise_std
    return x, dtype, noise, noise_std


class LIFTorch(_rp_lif.LIFTorch):
    """Rockpool's `LIFTorch` on lif_cuda's fused op: the same constructor, parameters, states and
    records (`vmem`, `isyn`, `irec`, `spikes`), and the same spikes, records and state bit for bit in
    float32 on the same device; gradients of input, threshold, bias, w_rec and the leak parameters to
    float32 rounding.

    leak_mode, as Rockpool's: "taus" (tau_mem, tau_syn trained; the op computes exp(-dt/tau) as
    torch does), "decays" (alpha, beta trained; the op takes them as they are, in [0, 1]) or
    "bitshifts" (dash_mem, dash_syn trained, Xylo's leaks: alpha = 1 - 1/2**dash_mem computed here
    as Rockpool computes it, then taken by the op as a decay; autograd chains to the dashes, which
    must be >= 0).

    Keyword-only extras: `backend` ("auto", "fused", "reference") as lif_cuda.SynapticLIF's; `noise`
    (with noise_std > 0): "torch" (default) draws the noise with torch.randn exactly as Rockpool does,
    so a seeded run matches Rockpool's; "kernel" draws it inside the fused kernel (no (B,T,N) tensor).
    """

    def __init__(self, shape, leak_mode="taus", *args, backend="auto", noise="torch", **kwargs):
        _check_extras(backend, kwargs.get("spike_generation_fn", args[11] if len(args) > 11 else StepPWL))
        if noise not in _NOISE_MODES:
            raise ValueError(f"noise must be one of {_NOISE_MODES}, got {noise!r}")
        super().__init__(shape, leak_mode, *args, **kwargs)
        self.backend = rp.SimulationParameter(backend)
        self.noise = rp.SimulationParameter(noise)

    _spike_fn_class = _spike_fn_class

    def forward(self, input_data):
        """Spikes (B,T,N) for input (B,T,N*S); the states become batch row 0's last values, detached."""
        x, dtype, noise, noise_std = _synaptic_prologue(self, input_data)
        B = x.shape[0]
        # Snapshots: a backward may hold the initial state while the states are updated below.
        v0, i0, s0 = (t.to(device=x.device, dtype=dtype, copy=True) for t in (self.vmem, self.isyn, self.spikes))
        (leak_mem, leak_syn), leak_mode = _leak(self)
        try:
            out = self._fused_evolve(x, v0, i0, s0, leak_mem, leak_syn, leak_mode, noise, noise_std)
        except ValueError as exc:
            named = _name_the_bitshift(exc) if self.leak_mode == "bitshifts" else None
            if named is None:
                raise
            raise named from exc
        spikes, vmem, isyn, irec, v_final, i_final, s_final = out
        if self._record:
            self._record_dict = {"vmem": vmem, "isyn": isyn, "irec": irec, "spikes": spikes}
        if B > 0:
            self.vmem.copy_(v_final[0].detach())
            self.isyn.copy_(i_final[0].detach())
            self.spikes.copy_(s_final[0].detach())
        return spikes

    def _fused_evolve(self, x, v0, i0, s0, leak_mem, leak_syn, leak_mode, noise, noise_std):
        return synaptic_evolve(
            x,
            v0,
            i0,
            leak_mem,
            leak_syn,
            self.threshold,
            self.bias,
            self.dt,
            w_rec=self.w_rec if self._has_rec else None,
            s0=s0,
            noise=noise,
            learning_window=float(self.learning_window),
            max_spikes_per_dt=float(self.max_spikes_per_dt),
            spike_generation_fn=self._spike_fn_class(),
            record=self._record,
            backend=self.backend,
            noise_std=noise_std,
            leak_mode=leak_mode,
        )


class aLIFTorch(_rp_alif.aLIFTorch):  # noqa: N801 (Rockpool's name)
    """Rockpool's `aLIFTorch` (LIFTorch with an after-hyperpolarisation current) on
    lif_cuda's fused op (SPEC §9): the same constructor, parameters (`w_ahp`, `tau_ahp` beside
    LIFTorch's), states (`vmem`, `isyn`, `iahp`, `spikes`) and records (`vmem`, `isyn`, `irec`,
    `iahp`, `spikes`), and the same spikes, records and state bit for bit in float32 on the same
    device; gradients of input, tau_mem, tau_syn, threshold, bias, w_rec, w_ahp and tau_ahp to
    float32 rounding. Keyword-only extras `backend` and `noise` as lif_cuda.rockpool.LIFTorch's;
    leak modes "taus", "decays" and "bitshifts" as LIFTorch's. A () w_ahp is one weight for every
    neuron (Rockpool's own accepts it for
    one neuron only).
    """

    def __init__(self, shape, tau_ahp=None, w_ahp=None, *args, backend="auto", noise="torch", **kwargs):
        _check_extras(backend, kwargs.get("spike_generation_fn", StepPWL))
        if noise not in _NOISE_MODES:
            raise ValueError(f"noise must be one of {_NOISE_MODES}, got {noise!r}")
        super().__init__(shape, tau_ahp, w_ahp, *args, **kwargs)
        self.backend = rp.SimulationParameter(backend)
        self.noise = rp.SimulationParameter(noise)

    _spike_fn_class = _spike_fn_class

    def forward(self, input_data):
        """Spikes (B,T,N) for input (B,T,N*S); the states become batch row 0's last values, detached."""
        x, dtype, noise, noise_std = _synaptic_prologue(self, input_data)
        B = x.shape[0]
        # Snapshots: a backward may hold the initial state while the states are updated below.
        states = ("vmem", "isyn", "spikes", "iahp")
        v0, i0, s0, h0 = (getattr(self, n).to(device=x.device, dtype=dtype, copy=True) for n in states)
        (leak_mem, leak_syn), leak_mode = _leak(self)
        try:
            out = ahp_synaptic_evolve(
                x, v0, i0, h0, leak_mem, leak_syn, self.threshold, self.bias, self.w_ahp, self.tau_ahp, self.dt,
                w_rec=self.w_rec if self._has_rec else None, s0=s0, noise=noise,
                learning_window=float(self.learning_window), max_spikes_per_dt=float(self.max_spikes_per_dt),
                spike_generation_fn=self._spike_fn_class(), record=self._record, backend=self.backend,
                noise_std=noise_std, leak_mode=leak_mode,
            )
        except ValueError as exc:
            named = _name_the_bitshift(exc) if self.leak_mode == "bitshifts" else None
            if named is None:
                raise
            raise named from exc
        spikes, vmem, isyn, irec, iahp = out[:5]
        if self._record:
            self._record_dict = {"vmem": vmem, "isyn": isyn, "irec": irec, "iahp": iahp, "spikes": spikes}
        if B > 0:
            for name, final in zip(states, out[5:]):
                getattr(self, name).copy_(final[0].detach())
        return spikes
