"""Shared helpers for the lif_cuda tests (../shared/SPEC.md is what they check).

- `make_case(...)`: a random, reproducible set of arguments for `lif_evolve` (fixed seed).
- `run_fused` / `run_reference`: the fused op and the pure-PyTorch oracle on the same case.
- `pre_spike_membrane`: u[t] of SPEC §1, rebuilt from the oracle's recorded post-reset membrane
  with the very same rounded operations, so tests can assert that a boundary (u == thr, ...) was
  really hit instead of hoping it was.
- `assert_bitwise`, `rel_err`: exact and norm-wise comparisons with readable failure messages.
"""
import dataclasses
import math
from pathlib import Path
from typing import Optional

import pytest
import torch

import lif_cuda
from lif_cuda.reference import lif_evolve_reference

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


@pytest.fixture
def one_thread():
    """For tests that call the op hundreds of times on tiny inputs (gradcheck): with one thread
    no OpenMP region is started per call, which on a busy 2-core machine costs ~10x. Results do
    not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
