"""Shared helpers for the lif_cuda tests (../shared/SPEC.md is what they check).

- `make_case(...)`: a random, reproducible set of arguments for `lif_evolve` (fixed seed).
- `run_fused` / `run_reference`: the fused op and the pure-PyTorch oracle on the same case.
- `pre_spike_membrane`: u[t] of SPEC §1, rebuilt from the oracle's recorded post-reset membrane
  with the very same rounded operations, so tests can assert that a boundary (u == thr, ...) was
  really hit instead of hoping it was.
- `assert_bitwise`, `rel_err`: exact and norm-wise comparisons with readable failure messages.
- `make_synaptic_case(...)`: the same for `synaptic_evolve` (SPEC §7), as a dict of its arguments.
- `make_adaptive_case(...)`: the same for `adaptive_evolve` (SPEC §10).
- `model`: a fixture over every neuron model ("lif", "synaptic-ff", "synaptic-rec", "adaptive"), for the checks
  that hold for all of them (bad input, lengths/state, ...): see `Model`.
"""
import dataclasses
import math
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch

import lif_cuda
from lif_cuda.reference import lif_evolve_reference, tau_to_decay

# CI clones the repository with ../shared beside it; so does the development checkout.
GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared" / "golden"

DTYPES = (torch.float32, torch.float64)
DTYPE_IDS = ("f32", "f64")


def pytest_report_header(config):
    return (
        f"lif_cuda {lif_cuda.__version__}: extension loaded={lif_cuda.extension_loaded()}, "
        f"fused cpu={lif_cuda.fused_available('cpu')}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


@dataclasses.dataclass
class Case:
    """The arguments of one `lif_evolve` call."""

    input: torch.Tensor
    v0: torch.Tensor
    tau_mem: torch.Tensor
    threshold: torch.Tensor
    bias: torch.Tensor
    dt: float = 1e-3
    noise: Optional[torch.Tensor] = None
    learning_window: float = 0.5
    max_spikes_per_dt: float = 2.0**16

    def kwargs(self, **overrides):
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        kw.update(overrides)
        return kw

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def leaves(self, with_noise=False):
        """Fresh leaf copies of the differentiable arguments, requiring grad; returns (case, leaves)."""
        names = ["input", "v0", "tau_mem", "threshold", "bias"] + (["noise"] if with_noise else [])
        leaves = {n: getattr(self, n).detach().clone().requires_grad_(True) for n in names}
        return self.replace(**leaves), [leaves[n] for n in names]


def make_case(
    seed,
    B,
    T,
    N,
    dtype=torch.float32,
    *,
    params="neuron",
    input_mean=0.4,
    input_scale=1.0,
    noise=False,
    v0_shape="batch",
    dt=1e-3,
    learning_window=0.5,
    max_spikes_per_dt=2.0**16,
):
    """A random case. params: "neuron" (all (N,)), "scalar" (all ()), or "mixed" (tau (), thr (N,),
    bias ()). Thresholds lie in [0.3, 1.5], tau in [5, 50] ms, so with the default input most steps
    are near a threshold and some emit several spikes."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float64)

    pshape = {"neuron": ((N,), (N,), (N,)), "scalar": ((), (), ()), "mixed": ((), (N,), ())}[params]
    tau = 5e-3 + 45e-3 * rand(*pshape[0])
    thr = 0.3 + 1.2 * rand(*pshape[1])
    bias = 0.1 * randn(*pshape[2])
    x = input_mean + input_scale * randn(B, T, N)
    v0 = 0.5 * randn(*((B, N) if v0_shape == "batch" else (N,)))
    z = 0.3 * randn(B, T, N) if noise else None
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return Case(
        input=cast(x),
        v0=cast(v0),
        tau_mem=cast(tau),
        threshold=cast(thr),
        bias=cast(bias),
        dt=dt,
        noise=cast(z),
        learning_window=learning_window,
        max_spikes_per_dt=max_spikes_per_dt,
    )


def run_fused(case, record=True, **kw):
    """The fused op (backend="fused": an error, never a silent fallback, if it is missing)."""
    return lif_cuda.lif_evolve(**case.kwargs(**kw), record=record, backend="fused")


def run_reference(case, record=True, **kw):
    """The pure-PyTorch oracle."""
    return lif_evolve_reference(**case.kwargs(**kw), record=record)


def pre_spike_membrane(case, vmem):
    """u[t] = (((alpha * w[t-1]) + I[t]) + z[t]) + bias, with w the recorded post-reset membrane
    (B,T,N) and w[-1] = v0: the same rounded operations as SPEC §1 and the reference."""
    x = case.input
    dtype = x.dtype
    B, T, N = x.shape
    alpha = torch.exp(-case.dt / case.tau_mem.to(dtype))
    v0 = case.v0.to(dtype).expand(B, N)
    w_prev = torch.cat([v0.unsqueeze(1), vmem[:, :-1]], dim=1)
    u = alpha * w_prev
    u = u + x
    if case.noise is not None:
        u = u + case.noise.to(dtype)
    return u + case.bias.to(dtype)


def assert_bitwise(actual, expected, what):
    """torch.equal, with the shape, dtype and first mismatches in the message."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if torch.equal(actual, expected):
        return
    bad = (actual != expected) & ~(actual.isnan() & expected.isnan())
    idx = bad.nonzero()[:5].tolist()
    pairs = [(i, actual[tuple(i)].item(), expected[tuple(i)].item()) for i in idx]
    raise AssertionError(
        f"{what}: {int(bad.sum())} of {bad.numel()} elements differ; first (index, got, want): {pairs}"
    )


def assert_outputs_bitwise(got, want, record=True):
    spikes, vmem, final = got
    r_spikes, r_vmem, r_final = want
    assert_bitwise(spikes, r_spikes, "spikes")
    if record:
        assert_bitwise(vmem, r_vmem, "recorded membrane")
    else:
        assert vmem is None and r_vmem is None
    assert_bitwise(final, r_final, "final state")


def rel_err(actual, expected):
    """Norm-wise relative error ||a - e|| / ||e|| (absolute when e is all zero), in float64."""
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != {tuple(e.shape)}"
    num = torch.linalg.vector_norm(a - e).item()
    den = torch.linalg.vector_norm(e).item()
    return num / den if den > 0 else num


def assert_rel_close(actual, expected, tol, what):
    err = rel_err(actual, expected)
    assert math.isfinite(err) and err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"


def bits(t):
    """The exact bytes of a tensor (NaN-safe, -0.0 != 0.0), for "bit-identical" checks."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).clone() if t.numel() else t.clone()


@pytest.fixture
def keep_global_rng():
    """For tests that seed torch's global generator: leave it as it was for the rest of the suite."""
    with torch.random.fork_rng(devices=[]):
        yield


needs_fused_cpu = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")


# ------------------------------------------------------------------------ the synaptic model (§7)

SYNAPTIC_OUTPUTS = ("spikes", "vmem", "isyn", "irec", "v_final", "i_final", "s_final")
SYNAPTIC_ARGS = ("input", "v0", "i0", "tau_mem", "tau_syn", "threshold", "bias")  # positional, before dt


def _case_draws(seed, B, N, params, state):
    """A random case's draws (uniform r, normal n, float64, from `seed`) and its shapes: per-neuron
    parameters P ((N,) "neuron", () "scalar") and state rows ((B,) "rows", () "shared")."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    n = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
    return r, n, ((N,) if params == "neuron" else ()), ((B,) if state == "rows" else ())


def make_synaptic_case(seed, B, T, N, S, dtype=torch.float32, *, tau_syn="full", params="neuron", rec=False,
                       state="rows", input_mean=0.4):
    """A random case: tau_syn (N,S) "full", (1,S) "row" or () "scalar"; tau_mem, threshold, bias (N,)
    "neuron" or () "scalar"; state "rows" ((B,N), (B,N,S), (B,N)) or "shared" ((N,), (N,S), (N,))."""
    r, n, P, rows = _case_draws(seed, B, N, params, state)
    case = dict(
        input=input_mean + 0.8 * n(B, T, N * S),
        v0=0.5 * n(*rows, N),
        i0=0.3 * n(*rows, N, S),
        s0=(r(*rows, N) < 0.3).double(),
        tau_mem=5e-3 + 45e-3 * r(*P),
        tau_syn=2e-3 + 20e-3 * r(*{"full": (N, S), "row": (1, S), "scalar": ()}[tau_syn]),
        threshold=0.3 + 1.2 * r(*P),
        bias=0.1 * n(*P),
        w_rec=0.3 * n(N, N * S) if rec else None,
    )
    return {k: None if v is None else v.to(dtype) for k, v in case.items()}


def run_synaptic(fn, case, record=True, dt=1e-3, **kw):
    """synaptic_evolve or synaptic_evolve_reference on a case from make_synaptic_case."""
    c = dict(case)
    args = [c.pop(k) for k in SYNAPTIC_ARGS]
    return fn(*args, dt, **c, record=record, **kw)


def random_neuron_params(n, g):
    """tau_mem in [5, 35] ms, threshold in [0.5, 1.5], bias ~ 0.05 N(0, 1), per neuron, from `g`."""
    tau = 5e-3 + 30e-3 * torch.rand(n, generator=g)
    thr = 0.5 + torch.rand(n, generator=g)
    return tau, thr, 0.05 * torch.randn(n, generator=g)


def make_synaptic_layer(S=2, N=6, rec=True, leak_mode="taus", **kw):
    """A SynapticLIF with random per-neuron (and per-synapse) parameters; leak_mode "decays": the
    same layer with the decays of its time constants as its parameters."""
    g = torch.Generator().manual_seed(0)
    tau_mem, tau_syn = 5e-3 + 30e-3 * torch.rand(N, generator=g), 2e-3 + 10e-3 * torch.rand(N, S, generator=g)
    leak = dict(tau_mem=tau_mem, tau_syn=tau_syn)
    if leak_mode == "decays":
        dt = kw.get("dt", 1e-3)
        leak = dict(leak_mode="decays", alpha=tau_to_decay(dt, tau_mem), beta=tau_to_decay(dt, tau_syn))
    return lif_cuda.SynapticLIF(
        (N * S, N), **leak, threshold=0.5 + torch.rand(N, generator=g),
        bias=0.05 * torch.randn(N, generator=g), has_rec=rec,
        w_rec=0.4 * torch.randn(N, N * S, generator=g) if rec else None, **kw,
    )


def run_synaptic_fused(case, record=True, **kw):
    """The fused synaptic op (an error, never a silent fallback, if it is missing)."""
    return run_synaptic(lif_cuda.synaptic_evolve, case, record, backend="fused", **kw)


def run_synaptic_reference(case, record=True, **kw):
    return run_synaptic(lif_cuda.synaptic_evolve_reference, case, record, **kw)


def assert_synaptic_bitwise(got, want, record=True):
    """Every output of the synaptic op bit for bit (the records are None without record)."""
    for name, g, w in zip(SYNAPTIC_OUTPUTS, got, want):
        if not record and name in ("vmem", "isyn", "irec"):
            assert g is None and w is None, name
            continue
        assert_bitwise(g, w, name)


# ------------------------------------------------------------------------ every model, one face


class Model:
    """A neuron model as the checks shared by every model see it (the `model` fixture).

    - `layer(n, backend, batch_state, dtype, **kw)`: its module with n neurons and non-default,
      reproducible parameters; `n_in(n)`: the width of its input (N, or N*S);
    - `input(B, T, n, seed, dtype)`: a reproducible input that makes such a layer spike;
    - `states` / `records`: the names of the module's state buffers and of evolve()'s record dict;
      `state_of(layer)`: copies of its state; `state_shapes(n, B=None)`: their shapes by name (one
      row, or B rows with batch_state);
    - `params(layer)`: its trainable parameters, in the order `evolve_from` takes them;
    - `evolve_from(layer, x, state, params, **kw)`: the functional form on a layer's configuration,
      from `state` (a tuple in the order of `states`) -> the functional outputs, spikes first;
    - `evolve_fn` / `reference_fn`: the public functional API and the pure-PyTorch reference;
      `case(seed, B, T, N, dtype)`: their arguments (a dict, dt included); `outputs`: the names of
      their outputs; `finals`: final-state output -> its initial-state argument; `held`: recorded
      output -> the final state it holds on padding (the other per-step outputs are 0 there);
      `grad_outputs` / `grad_args`: the outputs a loss may use and the arguments it reaches;
    - `internals()`: (module, name of the fused op, name of the reference loop) where the functional
      form and the module look them up, for tests that watch or forbid those calls.
    """

    name = ""
    recurrent = False
    S = 1
    states = ()
    records = ()
    outputs = ()
    finals = {}
    held = {}

    def __repr__(self):
        return self.name

    def n_in(self, n):
        return n * self.S

    def state_of(self, layer):
        return tuple(getattr(layer, k).clone() for k in self.states)

    def state_shapes(self, n, B=None):
        rows = () if B is None else (B,)
        return {k: rows + shape for k, shape in zip(self.states, self._state_shapes(n))}


class LIFModel(Model):
    name = "lif"
    states = ("vmem",)
    records = ("vmem", "spikes")
    evolve_fn = staticmethod(lif_cuda.lif_evolve)
    reference_fn = staticmethod(lif_evolve_reference)

    def layer(self, n=5, backend="auto", batch_state=False, dtype=torch.float32, **kw):
        kw = {"tau_mem": torch.linspace(0.01, 0.04, n), "threshold": torch.linspace(0.6, 1.2, n),
              "bias": torch.linspace(-0.1, 0.1, n), **kw}
        return lif_cuda.LIFNeuron(n, backend=backend, batch_state=batch_state, **kw).to(dtype)

    def input(self, B=3, T=60, n=5, seed=8, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        return (0.5 + torch.randn(B, T, n, generator=g, dtype=torch.float64)).to(dtype)

    outputs = ("spikes", "vmem", "v_final")
    finals = {"v_final": "v0"}
    held = {"vmem": "v_final"}
    grad_outputs = outputs

    def case(self, seed, B, T, N, dtype=torch.float32, **kw):
        return make_case(seed, B, T, N, dtype, **kw).kwargs()

    def internals(self):
        return sys.modules[lif_cuda.lif_evolve.__module__], "lif_forward_op", "lif_evolve_reference"

    def grad_args(self, case):
        return [k for k in ("input", "v0", "tau_mem", "threshold", "bias", "noise") if case.get(k) is not None]

    def _state_shapes(self, n):
        return ((n,),)

    def params(self, layer):
        return [layer.tau_mem, layer.threshold, layer.bias]

    def evolve_from(self, layer, x, state, params, **kw):
        return lif_cuda.lif_evolve(x, state[0], *params, layer.dt, **kw)


class SynapticModel(Model):
    states = ("vmem", "isyn", "spikes")
    records = ("spikes", "vmem", "isyn", "irec")
    S = 2
    evolve_fn = staticmethod(lif_cuda.synaptic_evolve)
    reference_fn = staticmethod(lif_cuda.synaptic_evolve_reference)

    def __init__(self, recurrent):
        self.recurrent = recurrent
        self.name = "synaptic-rec" if recurrent else "synaptic-ff"

    def layer(self, n=5, backend="auto", batch_state=False, dtype=torch.float32, **kw):
        g = torch.Generator().manual_seed(0)
        S = self.S
        kw = dict(tau_mem=5e-3 + 30e-3 * torch.rand(n, generator=g),
                  tau_syn=2e-3 + 10e-3 * torch.rand(n, S, generator=g), threshold=0.5 + torch.rand(n, generator=g),
                  bias=0.05 * torch.randn(n, generator=g), has_rec=self.recurrent,
                  w_rec=0.4 * torch.randn(n, n * S, generator=g) if self.recurrent else None, **kw)
        return lif_cuda.SynapticLIF((n * S, n), backend=backend, batch_state=batch_state, **kw).to(dtype)

    def input(self, B=3, T=60, n=5, seed=8, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        return (0.3 + 0.8 * torch.randn(B, T, n * self.S, generator=g)).to(dtype)

    outputs = SYNAPTIC_OUTPUTS
    finals = {"v_final": "v0", "i_final": "i0", "s_final": "s0"}
    held = {"vmem": "v_final", "isyn": "i_final"}

    @property
    def grad_outputs(self):
        return ("spikes", "vmem", "isyn", "v_final", "i_final") + (("irec",) if self.recurrent else ())

    def case(self, seed, B, T, N, dtype=torch.float32, S=None, **kw):
        return dict(make_synaptic_case(seed, B, T, N, S or self.S, dtype, rec=self.recurrent, **kw), dt=1e-3)

    def internals(self):
        return sys.modules[lif_cuda.synaptic_evolve.__module__], "synaptic_forward_op", "synaptic_evolve_reference"

    def grad_args(self, case):
        names = ("input", "v0", "i0") + (("s0",) if self.recurrent else ()) + (
            "tau_mem", "tau_syn", "threshold", "bias", "w_rec", "noise")
        return [k for k in names if case.get(k) is not None]

    def _state_shapes(self, n):
        return ((n,), (n, self.S), (n,))

    def params(self, layer):
        return [p for p in (layer.tau_mem, layer.tau_syn, layer.threshold, layer.bias, layer.w_rec) if p is not None]

    def evolve_from(self, layer, x, state, params, **kw):
        v, i, s = state
        w_rec = params[4] if self.recurrent else None
        return lif_cuda.synaptic_evolve(x, v, i, *params[:4], layer.dt, w_rec=w_rec, s0=s, **kw)


AHP_OUTPUTS = ("spikes", "vmem", "isyn", "irec", "iahp", "v_final", "i_final", "s_final", "h_final")


class AHPSynapticModel(SynapticModel):
    """The synaptic model with the AHP current (SPEC §9): AHPSynapticLIF, ahp_synaptic_evolve."""

    states = ("vmem", "isyn", "spikes", "iahp")
    records = ("spikes", "vmem", "isyn", "irec", "iahp")
    evolve_fn = staticmethod(lif_cuda.ahp_synaptic_evolve)
    outputs = AHP_OUTPUTS
    finals = {"v_final": "v0", "i_final": "i0", "s_final": "s0", "h_final": "h0"}
    held = {"vmem": "v_final", "isyn": "i_final", "iahp": "h_final"}

    def __init__(self, recurrent):
        super().__init__(recurrent)
        self.name = "ahp-rec" if recurrent else "ahp-ff"

    def layer(self, n=5, backend="auto", batch_state=False, dtype=torch.float32, **kw):
        g = torch.Generator().manual_seed(1)
        S = self.S
        kw = dict(tau_mem=5e-3 + 30e-3 * torch.rand(n, generator=g),
                  tau_syn=2e-3 + 10e-3 * torch.rand(n, S, generator=g), threshold=0.5 + torch.rand(n, generator=g),
                  bias=0.05 * torch.randn(n, generator=g), has_rec=self.recurrent,
                  w_rec=0.4 * torch.randn(n, n * S, generator=g) if self.recurrent else None,
                  w_ahp=-0.2 - 0.6 * torch.rand(n, generator=g), tau_ahp=5e-3 + 30e-3 * torch.rand(n, generator=g),
                  **kw)
        return lif_cuda.AHPSynapticLIF((n * S, n), backend=backend, batch_state=batch_state, **kw).to(dtype)

    @property
    def grad_outputs(self):
        return super().grad_outputs + ("iahp", "h_final")

    def case(self, seed, B, T, N, dtype=torch.float32, S=None, **kw):
        case = super().case(seed, B, T, N, dtype, S, **kw)
        g = torch.Generator().manual_seed(seed + 1000)
        shared = kw.get("state") == "shared"
        P = () if kw.get("params") == "scalar" else (N,)
        ahp = dict(h0=-0.3 * torch.rand(*(() if shared else (B,)), N, generator=g, dtype=torch.float64),
                   w_ahp=-0.2 - 0.6 * torch.rand(P, generator=g, dtype=torch.float64),
                   tau_ahp=5e-3 + 30e-3 * torch.rand(P, generator=g, dtype=torch.float64))
        return {**case, **{k: v.to(dtype) for k, v in ahp.items()}}

    def internals(self):
        return sys.modules[lif_cuda.ahp_synaptic_evolve.__module__], "ahp_synaptic_forward_op", \
            "synaptic_evolve_reference"

    def grad_args(self, case):
        # s0 always: the previous spikes feed the AHP current at the first step.
        names = ("input", "v0", "i0", "h0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec", "w_ahp",
                 "tau_ahp", "noise")
        return [k for k in names if case.get(k) is not None]

    def _state_shapes(self, n):
        return super()._state_shapes(n) + ((n,),)

    def params(self, layer):
        return super().params(layer) + [layer.w_ahp, layer.tau_ahp]

    def evolve_from(self, layer, x, state, params, **kw):
        v, i, s, h = state
        w_rec = params[4] if self.recurrent else None
        w_ahp, tau_ahp = params[-2:]
        return lif_cuda.ahp_synaptic_evolve(x, v, i, h, *params[:4], w_ahp, tau_ahp, layer.dt, w_rec=w_rec, s0=s,
                                            **kw)


# ------------------------------------------------------------------ the adaptive LIF (§10)

ADAPTIVE_ARGS = ("input", "v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt")


def make_adaptive_case(seed, B, T, N, dtype=torch.float32, *, params="neuron", state="rows", input_mean=0.5,
                       dt=1e-3):
    """A random case of adaptive_evolve's arguments (a dict, dt included): parameters (N,) "neuron" or
    () "scalar"; state "rows" ((B,N)) or "shared" ((N,)). tau_adapt in [10, 60] ms and beta_adapt in
    [0.5, 2], so that the threshold moves by a good fraction of itself within a sequence."""
    r, n, P, rows = _case_draws(seed, B, N, params, state)
    case = dict(
        input=input_mean + n(B, T, N),
        v0=0.5 * n(*rows, N),
        b0=0.5 * r(*rows, N),
        tau_mem=5e-3 + 45e-3 * r(*P),
        threshold=0.3 + 1.2 * r(*P),
        bias=0.1 * n(*P),
        tau_adapt=10e-3 + 50e-3 * r(*P),
        beta_adapt=0.5 + 1.5 * r(*P),
    )
    return {**{k: v.to(dtype) for k, v in case.items()}, "dt": dt}


class AdaptiveModel(Model):
    name = "adaptive"
    states = ("vmem", "adapt")
    records = ("vmem", "adapt", "spikes")
    evolve_fn = staticmethod(lif_cuda.adaptive_evolve)
    reference_fn = staticmethod(lif_cuda.adaptive_evolve_reference)
    outputs = ("spikes", "vmem", "adapt", "v_final", "b_final")
    finals = {"v_final": "v0", "b_final": "b0"}
    held = {"vmem": "v_final", "adapt": "b_final"}
    grad_outputs = outputs

    def layer(self, n=5, backend="auto", batch_state=False, dtype=torch.float32, **kw):
        kw = {"tau_mem": torch.linspace(0.01, 0.04, n), "threshold": torch.linspace(0.6, 1.2, n),
              "bias": torch.linspace(-0.1, 0.1, n), "tau_adapt": torch.linspace(0.02, 0.1, n),
              "beta_adapt": torch.linspace(0.5, 1.5, n), **kw}
        return lif_cuda.AdaptiveLIF(n, backend=backend, batch_state=batch_state, **kw).to(dtype)

    def input(self, B=3, T=60, n=5, seed=8, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        return (0.6 + torch.randn(B, T, n, generator=g, dtype=torch.float64)).to(dtype)

    def case(self, seed, B, T, N, dtype=torch.float32, **kw):
        return make_adaptive_case(seed, B, T, N, dtype, **kw)

    def internals(self):
        return sys.modules[lif_cuda.adaptive_evolve.__module__], "adaptive_forward_op", "adaptive_evolve_reference"

    def grad_args(self, case):
        return [k for k in (*ADAPTIVE_ARGS, "noise") if case.get(k) is not None]

    def _state_shapes(self, n):
        return ((n,), (n,))

    def params(self, layer):
        return [layer.tau_mem, layer.threshold, layer.bias, layer.tau_adapt, layer.beta_adapt]

    def evolve_from(self, layer, x, state, params, **kw):
        return lif_cuda.adaptive_evolve(x, state[0], state[1], *params, layer.dt, **kw)


MODELS = {m.name: m for m in (LIFModel(), SynapticModel(False), SynapticModel(True), AHPSynapticModel(False),
                              AHPSynapticModel(True), AdaptiveModel())}


@pytest.fixture(params=list(MODELS))
def model(request):
    """Every neuron model: the LIF neuron, the synaptic one feed-forward and recurrent, the
    synaptic one with the AHP current (SPEC §9), feed-forward and recurrent, and the adaptive one
    (SPEC §10)."""
    return MODELS[request.param]


@pytest.fixture
def one_thread():
    """For tests that call the op hundreds of times on tiny inputs (gradcheck): with one thread
    no OpenMP region is started per call, which on a busy 2-core machine costs ~10x. Results do
    not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load_xylo_v2_mapper():
    """Rockpool's Xylo v2 (SYNS61201) mapper (skips the test where it cannot be loaded). Where the
    device package cannot be imported (it imports `samna`, the hardware library, on the way), its
    mapper and graph modules, which need only rockpool.graph, are loaded from their files as a
    package of their own."""
    try:
        from rockpool.devices.xylo.syns61201 import mapper

        return mapper
    except ImportError:
        pass
    import importlib
    import importlib.util
    import types

    name = "_lif_cuda_tests_xylo_v2"
    if name not in sys.modules:
        spec = importlib.util.find_spec("rockpool.devices")
        package = types.ModuleType(name)
        package.__path__ = [str(Path(spec.submodule_search_locations[0]) / "xylo" / "syns61201")]
        sys.modules[name] = package
    try:
        return importlib.import_module(name + ".xylo_mapper").mapper
    except ImportError as exc:
        pytest.skip(f"Rockpool's Xylo mapper could not be loaded: {exc}")
