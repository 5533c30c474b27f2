"""SpikeLinear (SPEC §11): nn.Linear's forward and gradients bit for bit, its input kept as bits or
bytes, a broken promise an error."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import lif_cuda
from lif_cuda.spike_linear import _pack_aten, _unpack_aten, pack_counts, unpack_counts

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pair(in_features, out_features, bias=True, max_count=1, device="cpu", dtype=torch.float32):
    torch.manual_seed(0)
    plain = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
    spike = lif_cuda.SpikeLinear(in_features, out_features, bias=bias, max_count=max_count, device=device, dtype=dtype)
    spike.load_state_dict(plain.state_dict())
    return plain, spike


def counts(shape, max_count, device="cpu", dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, max_count + 1, shape, generator=g).to(device=device, dtype=dtype)


def grads(layer, x, g):
    x = x.clone().requires_grad_()
    y = layer(x)
    y.backward(g)
    return [y, x.grad, layer.weight.grad] + ([layer.bias.grad] if layer.bias is not None else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("max_count", [1, 2, 255])
@pytest.mark.parametrize("shape", [(5, 33), (4, 50, 33), (2, 3, 7, 33), (1, 33), (3, 16, 64), (2, 9, 8)])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_linear_bit_for_bit(device, max_count, shape, bias):
    plain, spike = pair(shape[-1], 19, bias, max_count, device)
    x = counts(shape, max_count, device)
    g = torch.randn(*shape[:-1], 19).to(device)
    for want, got in zip(grads(plain, x, g), grads(spike, x, g)):
        assert torch.equal(want, got)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_other_dtypes(dtype):
    plain, spike = pair(24, 10, max_count=3, dtype=dtype)
    x = counts((3, 11, 24), 3, dtype=dtype)
    g = torch.randn(3, 11, 10).to(dtype)
    for want, got in zip(grads(plain, x, g), grads(spike, x, g)):
        assert torch.equal(want, got)


def test_non_contiguous_input():
    plain, spike = pair(33, 12)
    x = counts((40, 6, 33), 1).transpose(0, 1)
    g = torch.randn(6, 40, 12)
    for want, got in zip(grads(plain, x, g), grads(spike, x, g)):
        assert torch.equal(want, got)


def saved_bytes(layer, x):
    """Bytes the autograd graph keeps for this call (every saved tensor's storage, parameters too)."""
    kept = []

    def pack(t):
        kept.append(t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x.requires_grad_())
    return sum(kept) - layer.weight.numel() * layer.weight.element_size()


@pytest.mark.parametrize("max_count,per_element", [(1, 1 / 8), (255, 1.0)])
def test_keeps_bits_or_bytes(max_count, per_element):
    plain, spike = pair(512, 64, max_count=max_count)
    x = counts((4, 100, 512), max_count)
    assert saved_bytes(plain, x.clone()) >= x.numel() * 4
    assert saved_bytes(spike, x.clone()) == x.numel() * per_element


def test_frozen_weight_keeps_no_input():
    _, spike = pair(64, 8)
    spike.weight.requires_grad_(False)
    x = counts((2, 10, 64), 1)
    assert saved_bytes(spike, x) == 0


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 1001])
def test_pack_round_trip(n):
    x = counts((n,), 1)
    packed = pack_counts(x, 1)
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
    assert torch.equal(unpack_counts(packed, 1, n, torch.float32), x)
    y = counts((n,), 200)
    assert torch.equal(unpack_counts(pack_counts(y, 200), 200, n, torch.float32), y)


FUSED = pytest.mark.skipif(not lif_cuda.extension_loaded(), reason="needs the compiled extension")


@FUSED
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("max_count", [1, 3, 255])
# Around a byte, a task of the CPU's parallel pass (2**15 bytes) and several tasks.
@pytest.mark.parametrize("n", [1, 7, 8, 9, 8 * 2**15 - 3, 8 * 2**15 + 1, 3 * 2**18 + 5])
def test_fused_pack_equals_the_aten_passes(device, dtype, max_count, n):
    """The fused one-pass kernels give the bytes of the ATen passes (the fallback), and back."""
    x = counts((n,), max_count, device, dtype, seed=n)
    packed = torch.ops.lif_cuda.pack_counts(x, max_count)
    assert torch.equal(packed, _pack_aten(x, max_count))
    got = torch.ops.lif_cuda.unpack_counts(packed, max_count, n, dtype)
    assert got.dtype == dtype and torch.equal(got, _unpack_aten(packed, max_count, n, dtype))
    assert torch.equal(got, x)


@FUSED
@pytest.mark.parametrize("max_count", [1, 2, 255])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_fused_pack_checks_every_value(max_count, dtype):
    """A value that breaks the promise anywhere (first, last, inside a task, in the last partial
    byte) is a ValueError naming max_count from the same pass, whatever the dtype."""
    n = 8 * 2**15 + 5
    bads = [max_count + 1.0, 0.5, -1.0, float("nan"), float("inf"), -0.25]
    for i, where in enumerate([0, n - 1, 2**15 * 8 - 1, n - 3, 12345, 8 * 2**15]):
        x = counts((n,), max_count, dtype=dtype, seed=i)
        x[where] = bads[i]
        with pytest.raises(ValueError, match="max_count=%d" % max_count):
            torch.ops.lif_cuda.pack_counts(x, max_count)
    ok = counts((n,), max_count, dtype=dtype)
    ok[0], ok[-1] = 0.0, float(max_count)  # the bounds themselves keep the promise; -0.0 too
    ok[1] = -0.0
    assert torch.equal(torch.ops.lif_cuda.unpack_counts(torch.ops.lif_cuda.pack_counts(ok, max_count), max_count, n,
                                                        dtype), ok)


@FUSED
def test_fused_ops_check_their_arguments():
    x = counts((10,), 1)
    with pytest.raises(ValueError, match="max_count"):
        torch.ops.lif_cuda.pack_counts(x, 256)
    with pytest.raises(TypeError, match="input"):
        torch.ops.lif_cuda.pack_counts(x.long(), 1)
    packed = torch.ops.lif_cuda.pack_counts(x, 1)
    with pytest.raises(ValueError, match="packed"):
        torch.ops.lif_cuda.unpack_counts(packed, 1, 17, torch.float32)
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.lif_cuda.unpack_counts(packed, 1, 10, torch.int32)
    assert torch.ops.lif_cuda.pack_counts(x[:0], 1).shape == (0,)


@FUSED
@pytest.mark.parametrize("max_count", [1, 7])
def test_opcheck_pack_ops(max_count):
    x = counts((3, 5, 11), max_count)
    torch.library.opcheck(torch.ops.lif_cuda.pack_counts.default, (x, max_count))
    packed = torch.ops.lif_cuda.pack_counts(x, max_count)
    torch.library.opcheck(torch.ops.lif_cuda.unpack_counts.default, (packed, max_count, x.numel(), torch.float32))


@pytest.mark.parametrize(
    "max_count,bad",
    [(1, 2.0), (1, 0.5), (1, -1.0), (1, float("nan")), (3, 4.0), (3, 1.5), (255, 256.0), (255, float("inf"))],
)
def test_broken_promise_is_a_value_error_naming_max_count(max_count, bad):
    _, spike = pair(16, 4, max_count=max_count)
    before = {k: v.clone() for k, v in spike.state_dict().items()}
    x = counts((2, 5, 16), max_count)
    x[1, 3, 7] = bad
    with pytest.raises(ValueError, match="max_count"):
        spike(x.requires_grad_())
    for k, v in spike.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("max_count", [0, 256, -1])
def test_bad_max_count(max_count):
    with pytest.raises(ValueError, match="max_count"):
        lif_cuda.SpikeLinear(4, 2, max_count=max_count)
    with pytest.raises(TypeError, match="max_count"):
        lif_cuda.SpikeLinear(4, 2, max_count=1.0)


def test_is_an_nn_linear_with_the_same_state_dict():
    plain, spike = pair(10, 3)
    assert isinstance(spike, nn.Linear)
    assert list(spike.state_dict()) == list(plain.state_dict())
    assert "max_count=1" in repr(spike)


def test_compile_equals_eager():
    torch._dynamo.reset()
    _, spike = pair(32, 8, max_count=2)
    x = counts((3, 20, 32), 2)
    g = torch.randn(3, 20, 8)
    want = grads(spike, x, g)
    spike.weight.grad = spike.bias.grad = None
    compiled = torch.compile(spike, fullgraph=True, backend="aot_eager")
    for w, got in zip(want, grads(compiled, x, g)):
        assert torch.equal(w, got)


def test_compile_equals_eager_without_the_extension(monkeypatch):
    """Where the extension has no kernel for the device, the ATen passes run as custom ops of their
    own: a fullgraph compile still traces, with nn.Linear's gradients."""
    monkeypatch.setattr(lif_cuda.spike_linear._ext, "available", lambda *_: False)
    torch._dynamo.reset()
    plain, spike = pair(32, 8, max_count=1)
    x = counts((3, 20, 32), 1)
    g = torch.randn(3, 20, 8)
    want = grads(plain, x, g)
    compiled = torch.compile(spike, fullgraph=True, backend="aot_eager")
    for w, got in zip(want, grads(compiled, x, g)):
        assert torch.equal(w, got)
    torch._dynamo.reset()


def test_torchscript_is_a_plain_linear():
    plain, spike = pair(12, 5)
    scripted = torch.jit.script(spike)
    x = counts((2, 7, 12), 1)
    assert torch.equal(scripted(x), plain(x))


def test_inside_a_training_stack():
    """Linear + LIF twice: SpikeLinear trains exactly as nn.Linear does."""
    torch.manual_seed(3)

    def net(linear):
        torch.manual_seed(0)
        first = linear(20, 30) if linear is nn.Linear else linear(20, 30, max_count=1)
        second = linear(30, 4) if linear is nn.Linear else linear(30, 4, max_count=255)
        return nn.Sequential(first, lif_cuda.LIFNeuron(30, threshold=0.5), second, lif_cuda.LIFNeuron(4))

    x = counts((3, 40, 20), 1)
    results = []
    for linear in (nn.Linear, lif_cuda.SpikeLinear):
        model = net(linear)
        opt = torch.optim.SGD([model[0].weight, model[0].bias, model[2].weight, model[2].bias], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_broken_promise_is_a_device_side_assert():
    """In a process of its own: a device-side assertion leaves the CUDA context unusable."""
    script = (
        "import torch, lif_cuda\n"
        "layer = lif_cuda.SpikeLinear(16, 4).cuda()\n"
        "x = torch.zeros(2, 5, 16, device='cuda'); x[0, 0, 0] = 2\n"
        "y = layer(x.requires_grad_())\n"  # returns without a host sync
        "print('returned', flush=True)\n"
        "torch.cuda.synchronize()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "returned" in done.stdout
    assert done.returncode != 0 and "max_count" in done.stderr
