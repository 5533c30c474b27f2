"""train: what a user's training loop sees, optimiser included, for every implementation's LIF layer.
Each peer trains its closest neuron as bench/impls.py configures it, so a slightly different model:
its accuracy is reported beside its speed.

  digits  examples/train_digits.py's task and code: scikit-learn's digits, Poisson-coded (T=50),
          Linear(64,256) -> LIF(256) -> rates -> Linear(256,10), Adam, batch 64, the LIF layer's
          parameters fixed; the same initial weights and batches for all. A sample is one epoch;
          --epochs per implementation and seed, interleaved epoch by epoch. Reported: samples/s,
          test accuracy after the last epoch, how many batch losses equal the fused run's bit for bit.
  onm     Linear(n,n) -> LIF, B=16, T=500, random input and target rates (speed only); a sample is
          one training step (forward, MSE of the rates, backward, Adam). Reported: B / median step.
"""
import statistics

from bench.engine import Point
from bench.suites import add_impl_cases, available, describe_impls, parse_ints

NAME = "train"
ISOLATE = True
BASE = "fused"
DEFAULTS = dict(impls="fused,reference,rockpool,snntorch,spikingjelly,norse,exodus", task="all", epochs=20,
                seeds="0", neurons="512,1024", batch=16, steps=500, digits=None, memory=False)
QUICK = dict(epochs=2, digits=dict(max_batches=3, steps=10, hidden=32), neurons="64", batch=4, steps=50, repeats=2,
             max_repeats=3, budget_s=0.2, reuse_workers=True)


def add_options(p):
    p.add_argument("--task", choices=("digits", "onm", "all"))
    p.add_argument("--epochs", type=int, help="digits: epochs per implementation and seed (default 20)")
    p.add_argument("--seeds", help="digits: seeds, comma-separated (default 0)")
    p.add_argument("--neurons", help="onm: sizes n (default 512,1024)")
    p.add_argument("--batch", type=int, help="onm batch size (default 16)")
    p.add_argument("--steps", type=int, help="onm time steps (default 500)")


def describe(cfg):
    return describe_impls(cfg["impls"], cfg["device"])


def _sklearn_missing():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return 'scikit-learn is not installed (pip install -e ".[demo]")'
    return None


def points(cfg):
    keys = available(cfg)
    if cfg["task"] in ("digits", "all"):
        why = _sklearn_missing()
        for seed in parse_ints(cfg["seeds"]):
            spec = dict(suite=NAME, task="digits", device=cfg["device"], seed=seed, overrides=cfg["digits"] or {})
            epochs = cfg["epochs"]
            # Every epoch trains: one per round, no warm-up, exactly --epochs of them.
            yield Point(dict(task="digits", seed=seed), {} if why else {k: dict(spec, impl=k) for k in keys},
                        warmup=dict.fromkeys(keys, 0), skipped=dict.fromkeys(keys, why) if why else {},
                        timing=dict(repeats=epochs, max_repeats=epochs, slow_repeats=epochs, max_call_s=0),
                        burst=False)
    if cfg["task"] in ("onm", "all"):
        for n in parse_ints(cfg["neurons"]):
            shape = [cfg["batch"], cfg["steps"], n]
            yield add_impl_cases(Point(dict(task="onm", neurons=n, shape=shape), {}), cfg, shape, suite=NAME,
                                 task="onm")


def build(spec):
    from bench.impls import IMPLS
    from bench.workloads import DigitsTrainCase, OnmTrainCase

    impl = IMPLS[spec["impl"]]
    if spec["task"] == "digits":
        return DigitsTrainCase(impl, spec["device"], spec["seed"], spec["overrides"])
    B, T, n = spec["shape"]
    return OnmTrainCase(impl, n, B, T, spec["device"], spec["seed"])


def after_point(data, point, slots, cfg):
    """digits: each implementation's accuracy and losses, and its samples per second."""
    if point.where["task"] != "digits":
        return
    for slot in slots:
        rep = slot.case.report()
        rep["samples_per_s"] = rep.pop("samples_per_epoch") / statistics.median(slot.samples["epoch"])
        data.setdefault("digits", []).append(dict(seed=point.where["seed"], impl=slot.key, **rep))


def finish(data, cfg):
    """How many of each run's batch losses equal the fused run's (same seed) bit for bit."""
    runs = data.get("digits", [])
    fused = {r["seed"]: r["losses"] for r in runs if r["impl"] == "fused"}
    for r in runs:
        if r["seed"] in fused:
            pairs = [(a, b) for ea, eb in zip(r["losses"], fused[r["seed"]]) for a, b in zip(ea, eb)]
            r["losses_identical_to_fused"] = [sum(a == b for a, b in pairs), len(pairs)]


def onm_rates(data):
    """{impl: {n: training samples per second}}."""
    out = {}
    for r in data["results"]:
        if r.get("task") == "onm" and "median_s" in r:
            out.setdefault(r["impl"], {})[r["neurons"]] = r["shape"][0] / r["median_s"]
    return out


def digits_rates(data):
    """{impl: (median samples/s over seeds, [test accuracies])}."""
    out = {}
    for r in data.get("digits", []):
        out.setdefault(r["impl"], []).append(r)
    return {k: (statistics.median(r["samples_per_s"] for r in rs), [r["test_accuracy"] for r in rs])
            for k, rs in out.items()}


def summary(data):
    lines = []
    digits = digits_rates(data)
    if digits:
        f = digits.get("fused", (None,))[0]
        lines += ["digits: training samples/s, fused's speed-up, test accuracy, batch losses equal to fused's:", "",
                  "| implementation | samples/s | fused speed-up | test accuracy | losses = fused's |",
                  "|---|---|---|---|---|"]
        same = {r["impl"]: r.get("losses_identical_to_fused") for r in data["digits"]}
        for k, (rate, accs) in digits.items():
            up = f"{f / rate:.1f}x" if f and k != "fused" else "—"
            eq = "—" if k == "fused" or not same.get(k) else f"{same[k][0]}/{same[k][1]}"
            lines.append(f"| {k} | {rate:.0f} | {up} | {statistics.mean(accs):.3f} | {eq} |")
    onm = onm_rates(data)
    if onm:
        ns = sorted({n for v in onm.values() for n in v})
        lines += ["", "onm: training samples/s (fused's speed-up):", "",
                  "| implementation | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for k, v in onm.items():
            cells = [f"{v[n]:.1f}" + (f" ({onm['fused'][n] / v[n]:.1f}x)" if k != "fused" and n in onm.get("fused", {})
                                      else "") if n in v else "—" for n in ns]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(data, plt, path):
    """Training samples/s: digits (bars, accuracy beside) and onm (against n)."""
    digits, onm = digits_rates(data), onm_rates(data)
    panels = [p for p, v in (("digits", digits), ("onm", onm)) if v]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "digits":
            keys = list(digits)
            bars = ax.barh(range(len(keys)), [digits[k][0] for k in keys])
            for b, k in zip(bars, keys):
                ax.text(b.get_width() * 1.05, b.get_y() + b.get_height() / 2,
                        f"acc {statistics.mean(digits[k][1]):.3f}", va="center", fontsize=8)
            ax.set_yticks(range(len(keys)), keys, fontsize=8)
            ax.invert_yaxis()
            rates = [digits[k][0] for k in keys]
            ax.set(xscale="log", xlabel="training samples/s", title="digits (test accuracy beside)",
                   xlim=(min(rates) / 2, max(rates) * 4))
        else:
            for k, v in onm.items():
                ax.plot(sorted(v), [v[n] for n in sorted(v)], "o-", label=k)
            ax.set(xscale="log", yscale="log", xlabel="neurons n", ylabel="training samples/s",
                   title="Linear(n,n) + LIF, random data")
            ax.legend(fontsize=7)
    return fig
