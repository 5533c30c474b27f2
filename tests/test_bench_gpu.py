"""bench/bench_gpu.py runs end to end (issue 11): here on the CPU (--device cpu), so that the script a
GPU run depends on is checked in every CI run; on a GPU bench/gpu_check.sh runs it for real."""
import importlib.util
import json

import pytest

import lif_cuda


@pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")
def test_bench_gpu_runs_and_writes_its_targets(tmp_path, monkeypatch):
    from bench import bench_gpu

    monkeypatch.setenv("SJ_LIF_CUDA_IMPLEMENTATION", "auto")
    monkeypatch.delenv("OUT", raising=False)
    peers = "rockpool,spikingjelly"
    rc = bench_gpu.main(["--device", "cpu", "--shapes", "2x12x40", "--repeats", "2", "--peer-repeats", "1",
                         "--warmup", "1", "--copy-mib", "4", "--peers", peers, "--out-dir", str(tmp_path)])
    assert rc == 0
    (path,) = tmp_path.glob("gpu-*.json")
    result = json.loads(path.read_text())
    assert result["target_shape"] == [2, 12, 40] and result["copy_bandwidth_gbps"] > 0
    modes = {(r["impl"], r["dtype"], r["mode"]) for r in result["results"] if "error" not in r}
    for dtype in ("float32", "bfloat16"):
        for mode in ("fwd", "fwd-noise", "fwd+bwd"):
            assert ("fused", dtype, mode) in modes
    fused = [r for r in result["results"] if r["impl"] == "fused"]
    assert all(r["median_ms"] > 0 and r["gbps"] > 0 for r in fused)
    targets = result["targets"]
    assert len(targets) == 5
    for name in ("fwd+bwd fraction of copy_ bandwidth", "in-kernel noise forward / noise-off forward",
                 "bfloat16 fwd+bwd / float32 fwd+bwd"):
        assert targets[name]["value"] > 0 and targets[name]["met"] in (True, False), name
    for name, key in (("rockpool", "fwd+bwd speed-up over Rockpool"),
                      ("spikingjelly", "fwd+bwd speed-up over SpikingJelly")):
        if "unavailable" in result["peers"][name]:
            assert targets[key]["value"] is None and targets[key]["met"] is None
        else:
            assert (name, "float32", "fwd+bwd") in modes and targets[key]["value"] > 0
    if importlib.util.find_spec("rockpool") is not None:
        rp = [r for r in result["results"] if r["impl"] == "rockpool"]
        assert rp and all(r.get("spikes_equal_fused") is True for r in rp), "Rockpool's spikes differ from ours"
