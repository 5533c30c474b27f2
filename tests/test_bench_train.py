"""`python -m bench train --quick` on lif_cuda's own implementations (fused, reference): it runs, and
its JSON holds what the training table is made of. A slow benchmark run: `pytest -m bench`."""
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


@pytest.mark.bench
@pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="the fused CPU kernels are not built")
def test_train_quick(tmp_path):
    out = tmp_path / "train-quick.json"
    cmd = [sys.executable, "-m", "bench", "train", "--quick", "--impls", "fused,reference", "--out", str(out),
           "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["schema"] == "lif_cuda-bench/2" and data["suite"] == "train"
    for key in ("torch", "torch_threads", "cpu_model", "load_average_at_start", "load_average_at_end", "git_commit"):
        assert data["machine"].get(key) is not None, key
    assert {k for k, v in data["impls"].items() if v["available"]} == {"fused", "reference"}

    epochs = {(r["impl"], r.get("task")): r for r in data["results"] if "median_s" in r}
    if HAVE_SKLEARN:
        digits = {r["impl"]: r for r in data["digits"]}
        assert set(digits) == {"fused", "reference"}
        for key in digits:
            assert epochs[(key, "digits")]["n"] == data["config"]["epochs"]  # one sample per epoch, no more
            assert digits[key]["epochs"] == data["config"]["epochs"]
            assert digits[key]["samples_per_s"] > 0 and 0.0 <= digits[key]["test_accuracy"] <= 1.0
        same, total = digits["reference"]["losses_identical_to_fused"]
        assert total == sum(len(e) for e in digits["fused"]["losses"]) and same >= 1  # batch 1: forward bit-exact
        assert "digits: training samples/s" in res.stdout
    else:
        assert all("scikit-learn" in r["skipped"] for r in data["results"] if r.get("task") == "digits")

    for key in ("fused", "reference"):
        assert epochs[(key, "onm")]["n"] >= data["config"]["repeats"]
    assert "onm: training samples/s" in res.stdout
    assert out.with_suffix(".png").exists() == HAVE_MPL
