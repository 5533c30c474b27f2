"""The benchmark harness (bench/): the gpu suite end to end on the CPU at a tiny size (a few
seconds, in the default run), the targets table evaluated on known medians, and the whole command
line (`-m bench`: slow benchmark runs are deselected by default). A GPU machine runs the suite for
real through bench/gpu_check.sh."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lif_cuda

REPO = Path(__file__).resolve().parents[1]
needs_fused = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")


def _gpu_config(tmp_path, **kw):
    from bench.__main__ import TIMING_DEFAULTS
    from bench.suites import SUITES

    cfg = dict(TIMING_DEFAULTS, **SUITES["gpu"].DEFAULTS)
    cfg.update(device="cpu", shapes="2x12x40", impls="fused,fused noise,fused bf16,rockpool", repeats=2,
               max_repeats=2, budget_s=0.0, memory=False, progress=False, out=str(tmp_path / "gpu.json"), **kw)
    return cfg


@needs_fused
def test_gpu_suite_runs_on_the_cpu(tmp_path):
    from bench import engine, report
    from bench.suites import SUITES

    data = engine.run(SUITES["gpu"], _gpu_config(tmp_path))
    saved = json.loads(Path(data["path"]).read_text())
    assert saved["schema"] == engine.SCHEMA and saved["suite"] == "gpu"
    for key in ("load_average_at_start", "load_average_at_end", "torch", "cpu_model", "git_commit"):
        assert saved["machine"].get(key) is not None, key
    timed = {(r["impl"], r["phase"]) for r in saved["results"] if "median_s" in r}
    for key in ("fused", "fused bf16"):
        assert {(key, "forward"), (key, "forward+backward")} <= timed
    assert ("fused noise", "forward") in timed and ("copy_", "forward") in timed
    assert ("fused noise", "forward+backward") not in timed
    assert all(r["n"] == 2 and r["median_s"] > 0 for r in saved["results"] if "median_s" in r)
    if importlib.util.find_spec("rockpool") is not None:
        assert ("rockpool", "forward+backward") in timed
        assert [c["spikes_equal"] for c in saved["checks"]] == [True], "Rockpool's spikes differ from ours"
    assert saved["targets"] == []  # the gpu targets are for CUDA runs
    assert "| 2x12x40 forward |" in report.markdown(saved)


def test_targets_are_evaluated_from_the_medians():
    from bench import targets

    shape = [16, 500, 16384]
    med = {("fused", "forward"): 1.0, ("fused", "forward+backward"): 4.0, ("copy_", "forward"): 1.0,
           ("fused noise", "forward"): 1.5, ("fused bf16", "forward+backward"): 2.0,
           ("rockpool", "forward+backward"): 2e3}
    data = dict(suite="gpu", machine=dict(device="cuda:0"),
                results=[dict(shape=shape, phase=p, impl=k, median_s=v, n=5) for (k, p), v in med.items()])
    got = {t["target"]: t for t in targets.evaluate(data)}
    assert len(got) == sum(t.suite == "gpu" for t in targets.TARGETS)
    bandwidth = got["forward+backward >= 0.7 of copy_ bandwidth"]
    assert bandwidth["value"] == pytest.approx(0.75) and bandwidth["met"] is True  # 24 B in 4 s vs 8 B in 1 s
    assert got["forward+backward >= 300x Rockpool"]["met"] is True
    assert got["in-kernel noise forward <= 1.3x noise off"]["met"] is False
    assert got["bfloat16 I/O forward+backward <= 0.75x float32"]["value"] == pytest.approx(0.5)
    assert got["forward+backward >= 2x SpikingJelly"]["met"] is None  # not measured
    data["machine"]["device"] = "cpu"
    assert targets.evaluate(data) == []


@pytest.mark.bench
@needs_fused
def test_command_line_gpu_quick(tmp_path):
    out = tmp_path / "gpu-quick.json"
    res = subprocess.run([sys.executable, "-m", "bench", "gpu", "--device", "cpu", "--quick", "--no-progress",
                          "--no-plot", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Median time per call" in res.stdout
    again = subprocess.run([sys.executable, "-m", "bench", "report", str(out)], capture_output=True, text=True,
                           timeout=120, cwd=REPO)
    assert again.returncode == 0 and "4x50x1024 forward" in again.stdout, again.stderr[-2000:]


def test_gpu_check_plan_fits_one_device_call(tmp_path):
    """bench/gpu_check.sh --plan, without a GPU: the stages that need one, each with its own limit,
    540 s at most in all (one 600-s device call, its start and transfers included); and without a
    GPU the check stops after its first stage, its summary written where $OUT says."""
    import re

    plan = subprocess.run(["bash", str(REPO / "bench/gpu_check.sh"), "--plan"], capture_output=True, text=True)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    stages = re.findall(r"stage (\w+) +limit +(\d+) s", plan.stdout)
    assert [name for name, _ in stages] == ["machine", "peers", "build", "cuda", "bench", "synaptic"]
    total = sum(int(limit) for _, limit in stages)
    assert total <= 540 and re.search(rf"total +{total} s", plan.stdout)
    if importlib.util.find_spec("torch") and not __import__("torch").cuda.is_available():
        run = subprocess.run(["bash", str(REPO / "bench/gpu_check.sh")], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "PYTHON": sys.executable})
        assert run.returncode == 1
        summary = (tmp_path / "summary.txt").read_text()
        assert "stage machine: FAIL (exit 3" in summary and "no GPU" in summary
