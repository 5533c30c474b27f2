"""examples/train_digits.py (what `make demo` runs): its functions on a tiny configuration, its
command line, a clear message where scikit-learn is missing, and `import lif_cuda` importing none
of the demo's extras."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "train_digits.py"
EXTRAS = ("sklearn", "matplotlib", "tqdm")


def _load_script():
    name = "train_digits_under_test"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


td = _load_script()  # importing the script needs none of the extras

HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_sklearn = pytest.mark.skipif(not HAVE_SKLEARN, reason='scikit-learn is not installed (pip install -e ".[test]")')

# A configuration that trains in about a second: small, but enough to learn something.
TINY = dict(steps=12, hidden=48, epochs=3, batch=64)


def _python(code, *args, timeout=120):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def _run_script_blocking(modules, *args):
    """Runs the script with `modules` made unimportable (sys.modules[name] = None)."""
    code = ("import runpy, sys\n"
            f"for m in {list(modules)!r}: sys.modules[m] = None\n"
            f"sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    return _python(code, *args)


def test_import_lif_cuda_imports_no_demo_extra():
    # torch itself imports tqdm where it is installed (torch.hub does): count what lif_cuda adds.
    code = ("import sys, torch\n"
            "before = set(sys.modules)\n"
            "import lif_cuda\n"
            f"bad = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {EXTRAS!r})\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    res = _python(code)
    assert res.returncode == 0, f"import lif_cuda imported {res.stdout.strip()} {res.stderr[-1000:]}"


def test_help_lists_the_options_without_scikit_learn():
    res = _run_script_blocking(EXTRAS, "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    for option in ("--device", "--epochs", "--seed", "--backend", "--compare", "--out-dir", "--max-spikes"):
        assert option in res.stdout, f"{option} missing from --help"
    assert "scikit-learn" in res.stdout


def test_without_scikit_learn_it_says_how_to_install_it():
    res = _run_script_blocking(["sklearn"], "--epochs", "1", "--no-plots", "--no-compare")
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "scikit-learn" in res.stderr and "pip install" in res.stderr, res.stderr
    assert "test accuracy" not in res.stdout


@needs_sklearn
def test_data_split_and_poisson_encoding_are_seeded():
    x_tr, y_tr, x_te, y_te = td.load_digits_split(0.25, seed=0)
    assert (len(x_tr), len(x_te)) == (1347, 450) and x_tr.shape[1] == 64
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0
    again = td.load_digits_split(0.25, seed=0)
    assert torch.equal(again[0], x_tr) and torch.equal(again[3], y_te)
    assert not torch.equal(td.load_digits_split(0.25, seed=1)[0], x_tr)

    cfg = td.Config(steps=40, max_batches=2)
    first = list(td.epoch_batches(x_tr, y_tr, cfg, epoch=0))
    replay = list(td.epoch_batches(x_tr, y_tr, cfg, epoch=0))
    other = list(td.epoch_batches(x_tr, y_tr, cfg, epoch=1))
    assert len(first) == 2 and first[0][0].shape == (64, 40, 64)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, replay))
    assert not torch.equal(first[0][0], other[0][0])
    spikes = first[0][0]
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}

    # The rate code: a pixel of intensity p fires in a fraction ~p of the steps.
    g = torch.Generator().manual_seed(0)
    rates = td.poisson_encode(torch.tensor([[0.0, 0.25, 1.0]]).expand(2000, 3), 50, 1.0, g).mean(dim=(0, 1))
    assert rates[0] == 0 and rates[2] == 1 and abs(float(rates[1]) - 0.25) < 0.01


@needs_sklearn
def test_tiny_training_learns_and_reproduces_and_fused_matches_reference():
    cfg = td.Config(**TINY)
    data = td.load_digits_split(cfg.test_size, cfg.seed)
    fused = td.train("fused", cfg, data)
    h = fused.history
    assert len(h) == cfg.epochs and all(s.test_accuracy is not None for s in h)
    assert h[-1].mean_loss < 0.7 * h[0].mean_loss, [s.mean_loss for s in h]
    assert h[-1].test_accuracy >= 0.7, [s.test_accuracy for s in h]  # chance is 0.1
    assert sum(h[0].samples) == 1344  # 21 full batches of 64

    # The same seed trains the same network, loss for loss.
    again = td.train("fused", cfg, data, epochs=1).history[0]
    assert again.losses == h[0].losses

    # The reference backend on the same batches: batch 1's forward, hence its loss, is bit-identical
    # (SPEC §1); later losses follow gradients that SPEC promises equal to rounding only.
    ref = td.train("reference", cfg, data, epochs=1).history[0]
    assert ref.losses[0] == h[0].losses[0]
    torch.testing.assert_close(torch.tensor(ref.losses), torch.tensor(h[0].losses), rtol=1e-4, atol=1e-5)
    same, n, _ = td.identical_losses(h[0].losses, ref.losses)
    assert 1 <= same <= n == len(h[0].losses)
    assert td.steady_rate(h[0], n) > 0


@needs_sklearn
def test_the_lif_layer_keeps_its_parameters_and_starts_every_batch_at_rest():
    cfg = td.Config(**TINY)
    trainer = td.Trainer("fused", cfg, td.load_digits_split(cfg.test_size, cfg.seed))
    lif = trainer.model.lif.lif
    before = {k: v.clone() for k, v in lif.state_dict().items()}
    trainer.train_epoch()
    assert not any(p.requires_grad for p in lif.parameters())
    for name in ("tau_mem", "threshold", "bias"):
        assert torch.equal(getattr(lif, name), before[name])
    # Batch after batch from a zero membrane: the same digits give the same spikes whatever ran before.
    x = trainer.test_spikes[:8]
    with torch.no_grad():
        first = trainer.model(x)[1]
        trainer.model(trainer.test_spikes[8:16])
        assert torch.equal(trainer.model(x)[1], first)


@needs_sklearn
def test_main_prints_accuracy_speed_up_parity_and_saves_pictures(tmp_path, capsys):
    args = ["--epochs", "2", "--steps", "10", "--hidden", "32", "--max-batches", "4", "--compare", "reference",
            "--no-progress", "--out-dir", str(tmp_path)]
    assert td.main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"^test accuracy: 0\.\d{3}$", out, re.M), out
    assert re.search(r"vs the reference backend: [\d.]+x faster \(\d+ against \d+ samples/s\)", out), out
    assert re.search(r"parity: .*batch losses of epoch 1 bit-identical", out), out
    assert "batch 1 loss" in out
    if HAVE_MPL:
        for name in ("train_digits_curves.png", "train_digits_raster.png"):
            png = tmp_path / name
            assert png.stat().st_size > 10_000 and str(png) in out
    else:
        assert "matplotlib is not installed" in out
