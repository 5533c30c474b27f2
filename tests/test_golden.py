"""SPEC §3 / golden/README.md: the reference and the fused op reproduce what the original Rockpool
LIFNeuronTorch computed on six fixed float32 cases: spikes, recorded membrane and final state
exactly, gradients of loss = sum(spikes * grad_spikes) + sum(vmem * grad_vmem) within 1e-5
relative (norm-wise; only the summation order of the parameter gradients differs).

Noise-free cases run through the `LIFNeuron` module (its state set to v0; `state_carry` reaches
v0 by a first call on `x_first`). Every case also runs through `lif_evolve` with the golden noise
tensor, which is the only way to reproduce the `noise` case: the module draws its own noise.
"""
import numpy as np
import pytest
import torch

import lif_cuda
from conftest import GOLDEN_DIR, assert_bitwise, assert_rel_close

GOLDEN_FILE = GOLDEN_DIR / "rockpool_lif_golden.npz"
if not GOLDEN_FILE.exists():
    pytest.skip(
        f"golden outputs not found at {GOLDEN_FILE} (the shared/ folder must sit beside the repository)",
        allow_module_level=True,
    )

with np.load(GOLDEN_FILE) as _npz:
    GOLDEN = {k: _npz[k] for k in _npz.files}
CASES = [str(c) for c in GOLDEN["cases"]]
NOISELESS = [c for c in CASES if GOLDEN[f"{c}/scalars"][3] == 0]
BACKENDS = ["reference", "fused"]
GRAD_TOL = 1e-5


def field(case, name):
    return torch.from_numpy(np.array(GOLDEN[f"{case}/{name}"]))


def scalars(case):
    dt, window, max_spikes, noise_std = (float(v) for v in GOLDEN[f"{case}/scalars"])
    return dt, window, max_spikes, noise_std


def test_golden_file_is_what_the_tests_expect():
    assert set(CASES) == {"per_neuron", "scalar_clamp3", "window1_dt5ms", "boundaries", "state_carry", "noise"}
    assert "state_carry/x_first" in GOLDEN and NOISELESS == [c for c in CASES if c != "noise"]
    for c in CASES:
        assert field(c, "input").dtype == torch.float32


def _check_forward(case, spikes, vmem, final_row0):
    assert_bitwise(spikes, field(case, "spikes"), f"{case}: spikes")
    assert_bitwise(vmem, field(case, "vmem"), f"{case}: vmem")
    assert_bitwise(final_row0, field(case, "final_vmem"), f"{case}: final_vmem")


def _check_grads(case, spikes, vmem, wrt):
    """wrt: {"input": tensor, "tau_mem": ..., ...}, leaves that took part in the forward."""
    loss = (spikes * field(case, "grad_spikes")).sum() + (vmem * field(case, "grad_vmem")).sum()
    names = list(wrt)
    grads = torch.autograd.grad(loss, [wrt[n] for n in names])
    for name, g in zip(names, grads):
        assert_rel_close(g, field(case, f"grad_{name}"), GRAD_TOL, f"{case}: grad_{name}")


def _module(case, backend):
    dt, window, max_spikes, noise_std = scalars(case)
    assert noise_std == 0
    n = field(case, "input").shape[-1]
    return lif_cuda.LIFNeuron(
        n,
        tau_mem=field(case, "tau_mem"),
        threshold=field(case, "threshold"),
        bias=field(case, "bias"),
        dt=dt,
        learning_window=window,
        max_spikes_per_dt=max_spikes,
        backend=backend,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", NOISELESS)
def test_module_reproduces_rockpool(case, backend):
    mod = _module(case, backend)
    if f"{case}/x_first" in GOLDEN:  # state_carry: v0 is where a first call left the module
        with torch.no_grad():
            mod(field(case, "x_first"))
        assert_bitwise(mod.vmem, field(case, "v0"), f"{case}: state after the first call")
    else:
        with torch.no_grad():
            mod.vmem.copy_(field(case, "v0"))
    x = field(case, "input").requires_grad_(True)
    spikes, state, rec = mod.evolve(x, record=True)
    _check_forward(case, rec["spikes"], rec["vmem"], mod.vmem)
    assert_bitwise(state["vmem"], field(case, "final_vmem"), f"{case}: returned state")
    _check_grads(
        case,
        spikes,
        rec["vmem"],
        {"input": x, "tau_mem": mod.tau_mem, "threshold": mod.threshold, "bias": mod.bias},
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_functional_with_golden_noise_reproduces_rockpool(case, backend):
    dt, window, max_spikes, noise_std = scalars(case)
    leaves = {n: field(case, n).requires_grad_(True) for n in ("input", "tau_mem", "threshold", "bias")}
    noise = field(case, "noise")
    if noise_std > 0:
        assert noise.abs().max() > 0
    spikes, vmem, final = lif_cuda.lif_evolve(
        leaves["input"],
        field(case, "v0"),
        leaves["tau_mem"],
        leaves["threshold"],
        leaves["bias"],
        dt,
        noise=noise,
        learning_window=window,
        max_spikes_per_dt=max_spikes,
        record=True,
        backend=backend,
    )
    _check_forward(case, spikes, vmem, final[0])
    _check_grads(case, spikes, vmem, leaves)
