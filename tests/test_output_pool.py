"""The CPU output pool (csrc/host/output_pool.h, lif_cuda.output_pool).

Large outputs reuse buffers that stay mapped between calls. It must change no result, be safe under
concurrency, stay within its limit, give memory back when switched off, and keep a training loop's
resident memory at one call's working set.
"""
import gc
import threading

import pytest
import torch

import lif_cuda

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _restore_limit():
    limit = lif_cuda.output_pool()["limit_bytes"]
    yield
    lif_cuda.output_pool(0)  # free what the test left
    lif_cuda.output_pool(limit)


def _rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _train_step(layer, x):
    x = x.detach().requires_grad_(True)
    s, _, rec = layer.evolve(x, record=True)
    (s.sum() + rec["vmem"].square().mean()).backward()
    return s, rec["vmem"], x.grad, [p.grad.clone() for p in layer.parameters()]


def test_results_do_not_depend_on_the_pool():
    x = torch.randn(4, 80, 1024) + 0.5  # every (B,T,N) output is 1.25 MiB: pooled
    outs = []
    for limit in (0, 512 * MIB, 512 * MIB):  # off, on (fresh buffers), on (reused buffers)
        lif_cuda.output_pool(limit)
        layer = lif_cuda.LIFNeuron(1024, tau_mem=torch.linspace(0.01, 0.03, 1024), backend="fused")
        outs.append(_train_step(layer, x))
        outs.append(_train_step(layer, x))  # state carried
    assert lif_cuda.output_pool()["hits"] > 0, "the pool was never used"
    for i in (2, 4):
        for step in (0, 1):
            got, want = outs[i + step], outs[step]
            for a, b in zip(got[:3], want[:3]):
                assert torch.equal(a, b)
            for a, b in zip(got[3], want[3]):
                assert torch.equal(a, b)


def test_buffers_are_reused_and_the_limit_holds():
    lif_cuda.output_pool(0)
    lif_cuda.output_pool(64 * MIB)
    x = torch.randn(8, 64, 1024)  # 2 MiB per output
    layer = lif_cuda.LIFNeuron(1024, backend="fused")
    with torch.no_grad():
        layer(x)
        before = lif_cuda.output_pool()
        for _ in range(10):
            layer(x)
        after = lif_cuda.output_pool()
    assert after["misses"] == before["misses"], "a repeated call of the same size allocated afresh"
    assert after["hits"] >= before["hits"] + 10
    assert 0 < after["held_bytes"] <= 64 * MIB
    # Other sizes: what is unused never exceeds the limit.
    kept = []
    with torch.no_grad():
        for t in range(60, 90):
            kept.append(layer(torch.randn(8, t, 1024)))
    del kept
    gc.collect()
    assert lif_cuda.output_pool()["held_bytes"] <= 64 * MIB


def test_switching_off_frees_the_buffers():
    lif_cuda.output_pool(256 * MIB)
    with torch.no_grad():
        for _ in range(3):
            lif_cuda.LIFNeuron(1024, backend="fused")(torch.randn(16, 64, 1024))
    assert lif_cuda.output_pool()["held_bytes"] > 0
    stats = lif_cuda.output_pool(0)
    assert stats["limit_bytes"] == 0 and stats["held_bytes"] == 0
    misses = stats["misses"]
    with torch.no_grad():
        s = lif_cuda.LIFNeuron(1024, backend="fused")(torch.randn(16, 64, 1024))
    del s
    stats = lif_cuda.output_pool()
    assert stats["held_bytes"] == 0 and stats["misses"] == misses, "the pool is off: it takes nothing"


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (1.5, TypeError), ("1GB", TypeError), (True, TypeError)])
def test_bad_limits(bad, exc):
    with pytest.raises(exc, match="limit_bytes"):
        lif_cuda.output_pool(bad)


def test_threads_sharing_the_pool_get_the_single_threaded_results():
    lif_cuda.output_pool(128 * MIB)
    xs = [torch.randn(4, 64, 1024, generator=torch.Generator().manual_seed(i)) + 0.4 for i in range(4)]
    with torch.no_grad():
        want = [lif_cuda.LIFNeuron(1024, backend="fused")(x) for x in xs]
    got = [None] * len(xs)
    errors = []

    def worker(i):
        try:
            layer = lif_cuda.LIFNeuron(1024, backend="fused")
            with torch.no_grad():
                for _ in range(15):  # buffers go back and forth between the threads
                    layer.reset_state()
                    got[i] = layer(xs[i])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for g, w in zip(got, want):
        assert torch.equal(g, w)


PEAK_SCRIPT = r"""
import gc, json, sys
import torch, lif_cuda

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS

lif_cuda.output_pool(int(sys.argv[1]))
x = torch.randn(32, 100, 1024) + 0.3  # 12.5 MiB per (B,T,N) tensor
layer = lif_cuda.LIFNeuron(1024, backend="fused")

def step():
    xi = x.detach().requires_grad_(True)
    layer(xi).sum().backward()

gc.collect()
base = status("VmRSS")
reset_peak()
step()
one_call = status("VmHWM") - base
reset_peak()
for _ in range(30):
    step()
print(json.dumps({"one_call": one_call, "peak": status("VmHWM") - base, "pool": lif_cuda.output_pool()}))
"""


def test_training_loop_peak_memory_stays_at_one_call():
    """The peak resident set over repeated forward+backward calls (loss = spikes.sum())
    stays within one call's working set + 10 %: the pool holds one call's buffers and reuses them,
    it does not pile up. In a fresh interpreter, so that nothing else in the process is resident.
    (Without the pool glibc's heap does not hold that bound.)"""
    limit = 1 << 30
    import json
    import subprocess
    import sys

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("/proc/self/clear_refs is not writable here")
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(limit)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    one_call, peak = r["one_call"], r["peak"]
    assert one_call >= 2 * 12.5 * MIB, f"one call's working set ({one_call / MIB:.1f} MiB) is implausibly small"
    assert peak <= 1.1 * one_call, f"peak {peak / MIB:.1f} MiB over 30 calls, one call's {one_call / MIB:.1f} MiB"
    assert r["pool"]["hits"] >= 30 and r["pool"]["held_bytes"] <= limit
