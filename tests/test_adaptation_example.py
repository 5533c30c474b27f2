"""examples/adaptation.py: adaptation visibly matters (SPEC §10). A short training run: the
adaptive layer remembers the cue across the delay, the plain LIF layer does not."""
import importlib.util
from pathlib import Path

import pytest

import lif_cuda

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "adaptation.py"


@pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="the fused CPU op is not built")
def test_adaptive_remembers_the_cue_lif_does_not(capsys):
    spec = importlib.util.spec_from_file_location("adaptation_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    curves = module.main(["--steps", "60", "--no-plot"])
    assert curves["adaptive"][-1][1] >= 0.9, curves["adaptive"]
    assert curves["lif"][-1][1] <= 0.65, curves["lif"]
    out = capsys.readouterr().out
    assert "adaptive" in out and "held-out accuracy" in out
