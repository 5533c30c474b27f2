"""bench/bench_train.py --quick on lif_cuda's own implementations (fused, reference): it runs, and
its JSON holds what the README's training table is made of."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lif_cuda

REPO = Path(__file__).resolve().parents[1]
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="the fused CPU kernels are not built")
def test_bench_train_quick(tmp_path):
    out = tmp_path / "bench_train-quick.json"
    cmd = [sys.executable, str(REPO / "bench" / "bench_train.py"), "--quick", "--impls", "fused,reference",
           "--out", str(out), "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["schema"] == "lif_cuda-bench-train/1"
    m = data["machine"]
    for key in ("torch", "torch_threads", "cpu_model", "load_average_at_start", "load_average_at_end", "git_commit"):
        assert m.get(key) is not None, key
    assert {k for k, v in data["impls"].items() if v["available"]} == {"fused", "reference"}

    digits = {r["impl"]: r for r in data["digits"]["results"]}
    if HAVE_SKLEARN:
        assert set(digits) == {"fused", "reference"}, data["digits"]
        epochs = data["config"]["epochs"]
        for r in digits.values():
            assert len(r["epoch_s"]) == epochs and r["epochs"] == epochs
            assert r["samples_per_s"] > 0 and 0.0 <= r["test_accuracy"] <= 1.0
        same, total = digits["reference"]["losses_identical_to_fused"]
        assert total == sum(len(e) for e in digits["fused"]["losses"]) and same >= 1  # batch 1: forward bit-exact
        assert "**digits**" in res.stdout
    else:
        assert "scikit-learn" in data["digits"]["skipped"] and not digits

    onm = {r["impl"]: r for r in data["onm"]["results"]}
    assert set(onm) == {"fused", "reference"}, data["onm"]
    for r in onm.values():
        assert r["samples_per_s"] > 0 and r["step"]["n"] >= data["config"]["repeats"]
    assert "**onm**" in res.stdout

    png = out.with_suffix(".png")
    assert png.exists() == HAVE_MPL
    again = subprocess.run([sys.executable, str(REPO / "bench" / "bench_train.py"), "--report", str(out), "--no-plot"],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert again.returncode == 0 and "**onm**" in again.stdout, again.stderr[-2000:]
