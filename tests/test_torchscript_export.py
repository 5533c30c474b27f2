"""Deployment: torch.jit.script and torch.export of models containing LIFNeuron (SPEC §5), and
torch.jit.script of a single layer of every model.

Scripted and exported models give the eager model's spikes and state bit for bit, and both still run
after being saved and loaded in a fresh process that has only imported torch and lif_cuda.
"""
import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import lif_cuda

pytestmark = [
    pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="scripted and exported models call the compiled op"),
    pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning"),  # PyTorch 2.13 says so
]

N_IN = 4


def make_model(**lif_kw):
    """Linear -> LIF (per-neuron parameters) -> Linear -> LIF (scalar parameters, clamped spikes)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Linear(N_IN, 6),
        lif_cuda.LIFNeuron(
            6,
            tau_mem=5e-3 + 30e-3 * torch.rand(6, generator=g),
            threshold=0.5 + torch.rand(6, generator=g),
            bias=0.05 * torch.randn(6, generator=g),
            **lif_kw,
        ),
        nn.Linear(6, 3),
        lif_cuda.LIFNeuron(3, tau_mem=10e-3, threshold=0.6, max_spikes_per_dt=2, **lif_kw),
    )
    with torch.no_grad():
        model[0].weight.copy_(0.8 * torch.randn(6, N_IN, generator=g) + 0.4)
        model[2].weight.copy_(0.8 * torch.randn(3, 6, generator=g) + 0.5)
    return model


def inputs(*shapes):
    g = torch.Generator().manual_seed(1)
    return [0.5 + torch.randn(*s, generator=g) for s in shapes]


def states(model):
    return [m.vmem.clone() for m in model.modules() if isinstance(m, lif_cuda.LIFNeuron)]


def test_script_equals_eager_across_calls():
    eager = make_model()
    scripted = torch.jit.script(copy.deepcopy(eager))
    for x in inputs((2, 30, N_IN), (3, 20, N_IN), (25, N_IN)):  # the state carries over; (T, N) is batch 1
        want = eager(x)
        got = scripted(x)
        assert want.sum() > 0 and torch.equal(got, want)
    for got_state, want_state in zip([scripted[1].vmem, scripted[3].vmem], states(eager)):
        assert torch.equal(got_state, want_state)


def test_scripted_model_trains_like_eager():
    """The autograd formula is C++ (at the op's Autograd key), so a scripted model differentiates
    too: the same gradients as eager mode, bit for bit (one op, the same kernels)."""
    eager = make_model()
    scripted = torch.jit.script(copy.deepcopy(eager))
    (x,) = inputs((2, 30, N_IN))
    for model in (eager, scripted):
        model(x).square().sum().backward()
    for (name, p_e), p_s in zip(eager.named_parameters(), scripted.parameters()):
        assert p_e.grad is not None and p_e.grad.abs().sum() > 0, name
        assert torch.equal(p_s.grad, p_e.grad), name


def test_script_of_a_single_layer_broadcasts_and_checks_its_input():
    eager = lif_cuda.LIFNeuron(5, tau_mem=0.01, threshold=0.4)
    scripted = torch.jit.script(copy.deepcopy(eager))
    (x,) = inputs((2, 40, 1))  # (..., 1) goes to every neuron
    assert torch.equal(scripted(x), eager(x))
    with pytest.raises(Exception, match="input must have shape"):
        scripted(torch.zeros(2, 3, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_script_keeps_eagers_dtype_policy(dtype):
    eager = lif_cuda.LIFNeuron(5, tau_mem=0.01, threshold=0.4)
    scripted = torch.jit.script(copy.deepcopy(eager))
    (x,) = inputs((2, 40, 5))
    want = eager(x.to(dtype))
    got = scripted(x.to(dtype))
    assert got.dtype == want.dtype and torch.equal(got, want)
    assert torch.equal(scripted.vmem, eager.vmem)


@pytest.mark.parametrize("noise", ["kernel", "torch"])
def test_script_draws_the_same_noise_as_eager(noise):
    eager = make_model(noise_std=0.3, noise=noise)
    scripted = torch.jit.script(copy.deepcopy(eager))
    (x,) = inputs((2, 30, N_IN))
    torch.manual_seed(5)
    want = eager(x)
    torch.manual_seed(5)
    assert torch.equal(scripted(x), want)


def test_export_with_dynamic_batch_and_time_equals_eager():
    eager = make_model()
    (x,) = inputs((2, 9, N_IN))
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1)
    program = torch.export.export(copy.deepcopy(eager), (x,), dynamic_shapes=({0: batch, 1: time},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "lif_cuda.lif_forward.default" in targets  # the fused op itself, one node per layer
    exported = program.module()
    for x in inputs((2, 9, N_IN), (5, 31, N_IN), (1, 3, N_IN)):
        assert torch.equal(exported(x), eager(x))
    assert torch.equal(exported.get_buffer("3.vmem"), eager[3].vmem)


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import torch
    import lif_cuda  # registers torch.ops.lif_cuda; nothing else of the model's Python is needed

    folder = sys.argv[1]
    x = torch.load(folder + "/x.pt")
    scripted = torch.jit.load(folder + "/model.ts")
    exported = torch.export.load(folder + "/model.pt2").module()
    torch.save([scripted(x), scripted(x), exported(x), exported(x)], folder + "/out.pt")
    """
)


def test_saved_models_run_in_a_fresh_process(tmp_path):
    eager = make_model()
    (x,) = inputs((3, 25, N_IN))
    torch.jit.save(torch.jit.script(copy.deepcopy(eager)), str(tmp_path / "model.ts"))
    torch.export.save(torch.export.export(copy.deepcopy(eager), (x,)), str(tmp_path / "model.pt2"))
    torch.save(x, tmp_path / "x.pt")
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    script_1, script_2, export_1, export_2 = torch.load(tmp_path / "out.pt")
    want_1, want_2 = eager(x), eager(x)  # the second call starts from the state the first left
    assert want_1.sum() > 0 and not torch.equal(want_1, want_2)
    for got, want in ((script_1, want_1), (script_2, want_2), (export_1, want_1), (export_2, want_2)):
        assert torch.equal(got, want)


# ------------------------------------------------------------------ the synaptic model (SPEC §7)


def test_script_of_a_layer_equals_eager_across_calls(model):
    """Every model: a scripted layer gives eager's spikes and state, batched and (T, N) input, the
    second call starting from the state the first left."""
    eager = model.layer(6)
    scripted = torch.jit.script(copy.deepcopy(eager))
    g = torch.Generator().manual_seed(4)
    for shape in ((2, 20, model.n_in(6)), (15, model.n_in(6))):
        x = 0.5 + torch.rand(shape, generator=g)
        with torch.no_grad():
            assert torch.equal(scripted(x), eager(x))
        for name in model.states:
            assert torch.equal(getattr(scripted, name), getattr(eager, name)), name
