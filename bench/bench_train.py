"""Training throughput: lif_cuda fused against its reference and the other SNN libraries, each
training the same network; JSON and a PNG in bench/results/, Markdown tables printed.

    python bench/bench_train.py                    # both tasks, every installed implementation
    python bench/bench_train.py --quick            # tiny sizes: checks that everything works
    python bench/bench_train.py --task digits --seeds 0,1,2
    python bench/bench_train.py --task onm --neurons 512,1024,2048
    python bench/bench_train.py --device cuda
    python bench/bench_train.py --report bench/results/bench_train-cpu-<date>.json   # tables + PNG again

Tasks:
  digits  examples/train_digits.py's task and network: scikit-learn's digits, Poisson-coded (T=50),
          Linear(64,256) -> LIF(256) -> spike rates -> Linear(256,10), Adam, batch 64, the LIF
          layer's parameters fixed. Every implementation starts from the same weights and trains on
          the same batches for --epochs epochs (default 20, as the demo); one timed sample is one
          epoch (Poisson encoding, forward, backward and Adam of every batch). Reported: samples/s
          (training samples / median epoch time), the median epoch time, the test accuracy after
          the last epoch, and how many batch losses equal the fused run's bit for bit.
  onm     the Open Neuromorphic set-up: Linear(n,n) -> LIF, B=16, T=500, on random input (no task:
          speed only); one timed sample is one training step (forward, MSE of the spike rates
          against fixed random targets, backward, Adam on the Linear layer). Reported: samples/s
          (B / median step time) for each n.

Each implementation's LIF layer is the one bench/impls.py configures (each peer's closest neuron;
see the `equation` of each in the JSON): snnTorch, SpikingJelly and Norse emit at most one spike
per step, Norse resets to zero, none has a bias; only Rockpool computes exactly lif_cuda's neuron.
So the peers train a slightly different model, and their accuracy after the same number of epochs
is reported beside their speed. Each implementation runs in a worker process of its own
(bench/worker.py explains why); the implementations are interleaved: epoch by epoch (digits, order
rotated every epoch), round by round (onm, bench/engine.py).
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

import torch  # noqa: E402

from bench import common  # noqa: E402
from bench import impls as impls_mod
from bench.engine import Slot, _Progress, run_interleaved  # noqa: E402
from bench.report import IMPL_ORDER  # noqa: E402
from bench.run import add_timing_options, print_setup, timing_config  # noqa: E402
from bench.worker import RemoteCase, WorkerError, Workers  # noqa: E402

SCHEMA = "lif_cuda-bench-train/1"
STEM = "bench_train"
DEFAULT_IMPLS = "fused,reference,rockpool,snntorch,spikingjelly,norse,exodus"
QUICK = dict(epochs=2, digits=dict(max_batches=3, steps=10, hidden=32), neurons=[64], batch=4, steps=50,
             repeats=2, max_repeats=3, budget_s=0.2)


def build_parser():
    p = argparse.ArgumentParser(prog="python bench/bench_train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--task", default="all", choices=("digits", "onm", "all"))
    p.add_argument("--impls", default=DEFAULT_IMPLS,
                   help=f"comma-separated, from {','.join(impls_mod.IMPLS)} (default {DEFAULT_IMPLS}; "
                        "missing peers are skipped)")
    p.add_argument("--epochs", type=int, default=20, help="digits: epochs per implementation (default 20)")
    p.add_argument("--seeds", default="0", help="digits: seeds, comma-separated (default 0)")
    p.add_argument("--neurons", default="512,1024", help="onm: sizes n (default 512,1024)")
    # onm's shape and the timing of its steps, as in python -m bench:
    add_timing_options(p)
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 epochs: checks that everything works")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/bench_train-<device>-<date>.json)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report", default=None, metavar="JSON", help="print the tables and write the PNG of a result file")
    return p


def config_from_args(args):
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device")
    try:
        impls_mod.select(args.impls)
    except ValueError as exc:
        raise SystemExit(f"--impls: {exc}") from None
    cfg = dict(device=device, tasks=["digits", "onm"] if args.task == "all" else [args.task], impls=args.impls,
               epochs=args.epochs, seeds=common.parse_ints(args.seeds), digits={},
               neurons=common.parse_ints(args.neurons), quick=args.quick, progress=not args.no_progress,
               **timing_config(args))
    if args.quick:
        cfg.update(QUICK)
    if min(cfg["epochs"], cfg["repeats"], cfg["slow_repeats"]) < 1 or not cfg["seeds"]:
        raise SystemExit("--epochs, --repeats and --slow-repeats must be >= 1, and --seeds not empty")
    return cfg


# ------------------------------------------------------------------------------------ digits
def _digits_unavailable():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return 'scikit-learn is not installed (pip install -e ".[demo]")'
    return None


def run_digits(data, cfg, todo, progress, shared=None):
    """Trains every implementation for cfg["epochs"] epochs per seed, epoch by epoch in rotating order."""
    out = data["digits"]
    workers = shared or Workers(cfg["threads"])
    try:
        for impl in todo:
            workers.get(impl.key)  # start them all now: they import torch and their library concurrently
        for seed in cfg["seeds"]:
            cases, epoch_s = {}, {}
            for impl in todo:
                spec = dict(workload="digits_train", impl=impl.key, device=cfg["device"], seed=seed,
                            overrides=cfg["digits"])
                try:
                    cases[impl.key] = RemoteCase(workers.get(impl.key), spec)
                    epoch_s[impl.key] = []
                except WorkerError as exc:
                    out["results"].append(dict(impl=impl.key, seed=seed, error=str(exc)[:300]))
            for epoch in range(cfg["epochs"]):
                keys = list(cases)
                for key in keys[epoch % max(len(keys), 1):] + keys[:epoch % max(len(keys), 1)]:
                    try:
                        epoch_s[key].append(cases[key].run()["epoch"])
                    except WorkerError as exc:
                        out["results"].append(dict(impl=key, seed=seed, error=str(exc)[:300]))
                        del cases[key]
                    progress.step(f"digits seed {seed} epoch {epoch + 1} {key}")
            for key, case in cases.items():
                try:
                    rep = case.report()
                except WorkerError as exc:
                    out["results"].append(dict(impl=key, seed=seed, error=str(exc)[:300]))
                    continue
                med = statistics.median(epoch_s[key])
                out["results"].append(dict(impl=key, seed=seed, epoch_s=epoch_s[key], median_epoch_s=med,
                                           samples_per_s=rep.pop("samples_per_epoch") / med, **rep))
                case.free()
    finally:
        if workers is not shared:
            workers.close()
    _parity(out["results"])


def _parity(results):
    """For each run: how many of its batch losses equal the fused run's (same seed) bit for bit."""
    fused = {r["seed"]: r["losses"] for r in results if r["impl"] == "fused" and "losses" in r}
    for r in results:
        base = fused.get(r["seed"])
        if base is None or "losses" not in r:
            continue
        pairs = [(a, b) for ea, eb in zip(r["losses"], base) for a, b in zip(ea, eb)]
        r["losses_identical_to_fused"] = [sum(a == b for a, b in pairs), len(pairs)]


# --------------------------------------------------------------------------------------- onm
def run_onm(data, cfg, todo, progress, shared=None):
    out = data["onm"]
    for n in cfg["neurons"]:
        shape = (cfg["batch"], cfg["steps"], n)
        # Fresh processes per point, as in run.py (what each finds in its heap is its own doing).
        workers = shared or Workers(cfg["threads"])
        try:
            slots = []
            for impl in todo:
                why = impl.skip(shape, cfg)
                if why:
                    out["results"].append(dict(impl=impl.key, n=n, skipped=why))
                    continue
                workers.get(impl.key)
            for impl in todo:
                if impl.skip(shape, cfg):
                    continue
                spec = dict(workload="onm_train", impl=impl.key, shape=list(shape), device=cfg["device"], seed=0)
                try:
                    slots.append(Slot(impl.key, RemoteCase(workers.get(impl.key), spec), impl.warmup))
                except WorkerError as exc:
                    out["results"].append(dict(impl=impl.key, n=n, error=str(exc)[:300]))
            run_interleaved(slots, repeats=cfg["repeats"], max_repeats=cfg["max_repeats"], budget_s=cfg["budget_s"],
                            slow_call_s=cfg["slow_call_s"], slow_repeats=cfg["slow_repeats"], progress=progress,
                            label=f"onm n={n}", over_cap_s=cfg["max_call_s"] or None)
            for slot in slots:
                if slot.error:
                    out["results"].append(dict(impl=slot.key, n=n, error=slot.error))
                    continue
                s = common.summarize(slot.samples["step"])
                rate = cfg["batch"] / s["median_s"]
                out["results"].append(dict(impl=slot.key, n=n, shape=list(shape), samples_per_s=rate,
                                           step=s, step_samples_s=slot.samples["step"], warmup_s=slot.warmup_s,
                                           warmup_only=slot.warmup_only))
                slot.case.free()
        finally:
            if workers is not shared:
                workers.close()


# --------------------------------------------------------------------------------------- run
def run(cfg, out=None):
    device = cfg["device"]
    common.quiet_peer_logging()
    chosen = impls_mod.select(cfg["impls"])
    availability = {i.key: i.unavailable(device) for i in chosen}
    machine = common.machine_info(device)
    digits_cfg = None
    if "digits" in cfg["tasks"] and not _digits_unavailable():
        from bench.workloads import train_digits_example

        digits_cfg = dataclasses.asdict(train_digits_example().Config(**cfg["digits"]))
        digits_cfg.pop("device")
        digits_cfg.update(epochs=cfg["epochs"], seeds=cfg["seeds"])
    data = dict(
        schema=SCHEMA, kind=STEM, machine=machine, config=dict(cfg),
        notes=[
            "Each implementation's LIF layer is bench/impls.py's (its closest neuron to lif_cuda's; see "
            "'equation'): the peers train a slightly different model, so their accuracy is reported beside their "
            "speed. Only Rockpool computes exactly lif_cuda's neuron.",
            "digits: one sample = one training epoch (Poisson encoding, forward, backward, Adam of every batch); "
            "samples/s = training samples / median epoch time; accuracy on the held-out test digits after the last "
            "epoch; implementations interleaved epoch by epoch, in rotating order.",
            f"onm: Linear(n,n) + LIF, B={cfg['batch']}, T={cfg['steps']}, random input and targets; one sample = one "
            "training step (forward, MSE of spike rates, backward, Adam); samples/s = B / median step time.",
        ],
        impls={i.key: dict(label=i.label, version=i.version(), equation=i.equation, time_major=i.time_major,
                           available=availability[i.key] is None, reason=availability[i.key]) for i in chosen},
        digits=dict(config=digits_cfg, results=[], skipped=None),
        onm=dict(results=[]),
    )
    out = out or common.results_path(STEM, device)
    print_setup(machine, availability, data["notes"])
    todo = [i for i in chosen if availability[i.key] is None]
    progress = _Progress(cfg["progress"], "bench_train")
    shared = Workers(cfg["threads"]) if cfg["quick"] else None  # --quick: one process per impl for everything
    try:
        if "digits" in cfg["tasks"]:
            why = _digits_unavailable()
            if why:
                data["digits"]["skipped"] = why
                print(f"digits: skipped: {why}")
            else:
                progress.expect(len(todo) * cfg["epochs"] * len(cfg["seeds"]))
                run_digits(data, cfg, todo, progress, shared)
            common.write_json(out, data)  # partial results survive an interrupted run
        if "onm" in cfg["tasks"]:
            run_onm(data, cfg, todo, progress, shared)
    finally:
        progress.close()
        if shared:
            shared.close()
    data["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    common.write_json(out, data)
    data["path"] = out
    return data


# ----------------------------------------------------------------------------------- reports
def _order(keys):
    return [k for k in IMPL_ORDER if k in keys]


def _label(data, key):
    return data["impls"].get(key, {}).get("label", key)


def _by_impl(results):
    out = {}
    for r in results:
        if "samples_per_s" in r:
            out.setdefault(r["impl"], []).append(r)
    return out


def _acc(runs):
    accs = [r["test_accuracy"] for r in runs]
    if len(accs) == 1:
        return f"{accs[0]:.3f}"
    return f"{statistics.mean(accs):.3f} ({min(accs):.3f}-{max(accs):.3f}, {len(accs)} seeds)"


def markdown(data):
    lines = []
    d = data["digits"]
    runs = _by_impl(d["results"])
    if d.get("skipped"):
        lines.append(f"digits: skipped ({d['skipped']})")
    elif runs:
        c = d["config"]
        net = f"Linear(64,{c['hidden']}) -> LIF -> rates -> Linear({c['hidden']},10)"
        lines.append(f"**digits** ({net}, T={c['steps']}, "
                     f"batch {c['batch']}, {c['epochs']} epochs, seeds {','.join(map(str, c['seeds']))}):")
        lines.append("")
        lines.append(
            "| implementation | samples/s | time per epoch | fused speed-up | test accuracy | batch losses = fused's |"
        )
        lines.append("|---|---|---|---|---|---|")
        fused = runs.get("fused")
        f_rate = statistics.median(r["samples_per_s"] for r in fused) if fused else None
        for key in _order(runs):
            rs = runs[key]
            rate = statistics.median(r["samples_per_s"] for r in rs)
            up = f"{f_rate / rate:.1f}x" if f_rate and key != "fused" else "—"
            same = [r.get("losses_identical_to_fused") for r in rs]
            same_txt = ("all" if all(s and s[0] == s[1] for s in same) else
                        ", ".join(f"{s[0]}/{s[1]}" for s in same if s)) if key != "fused" else "—"
            epoch = common.fmt_time(statistics.median(r["median_epoch_s"] for r in rs))
            lines.append(f"| {_label(data, key)} | {rate:.0f} | {epoch} | {up} | {_acc(rs)} | {same_txt} |")
    for r in d["results"]:
        if "error" in r:
            lines.append(f"digits: {r['impl']} (seed {r['seed']}) failed: {r['error']}")
    o = _by_impl(data["onm"]["results"])
    if o:
        ns = sorted({r["n"] for rs in o.values() for r in rs})
        shape = next(iter(o.values()))[0]["shape"]
        lines.append("")
        lines.append(f"**onm** (Linear(n,n) -> LIF, B={shape[0]}, T={shape[1]}, random data; training samples/s, "
                     "fused speed-up in brackets):")
        lines.append("")
        lines.append("| implementation | " + " | ".join(f"n={n}" for n in ns) + " |")
        lines.append("|---|" + "---|" * len(ns))
        fused = {r["n"]: r["samples_per_s"] for r in o.get("fused", [])}
        for key in _order(o):
            cells = []
            for n in ns:
                r = next((r for r in o[key] if r["n"] == n), None)
                if r is None:
                    cells.append("—")
                    continue
                cell = f"{r['samples_per_s']:.1f}"
                if key != "fused" and n in fused:
                    cell += f" ({fused[n] / r['samples_per_s']:.1f}x)"
                if r.get("warmup_only"):
                    cell += " (1 step)"
                cells.append(cell)
            lines.append(f"| {_label(data, key)} | " + " | ".join(cells) + " |")
    for r in data["onm"]["results"]:
        if "error" in r or "skipped" in r:
            lines.append(f"onm n={r['n']}: {r['impl']} {'failed' if 'error' in r else 'skipped'}: "
                         f"{r.get('error') or r.get('skipped')}")
    m = data["machine"]
    lines.append("")
    la, lb = m.get("load_average_at_start"), m.get("load_average_at_end")
    load = f"; load average {la[0]:.2f} at start, {lb[0]:.2f} at end" if la and lb else ""
    lines.append(f"({common.describe_machine(m)}, {m['date'][:16]}, commit {str(m.get('git_commit'))[:8]}{load})")
    return "\n".join(lines)


def plot(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.plot import COLORS

    runs = _by_impl(data["digits"]["results"])
    onm = _by_impl(data["onm"]["results"])
    panels = [p for p in ("digits", "onm") if (runs if p == "digits" else onm)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "digits":
            keys = _order(runs)
            rates = [statistics.median(r["samples_per_s"] for r in runs[k]) for k in keys]
            bars = ax.barh(range(len(keys)), rates, color=[COLORS.get(k, "grey") for k in keys])
            for b, k in zip(bars, keys):
                acc = statistics.mean(r["test_accuracy"] for r in runs[k])
                ax.text(b.get_width() * 1.05, b.get_y() + b.get_height() / 2, f"acc {acc:.3f}", va="center", fontsize=8)
            ax.set_yticks(range(len(keys)), [_label(data, k) for k in keys], fontsize=8)
            ax.invert_yaxis()
            c = data["digits"]["config"]
            ax.set(xscale="log", xlabel="training samples/s (higher is better)",
                   title=f"digits: {c['epochs']} epochs, T={c['steps']}, batch {c['batch']} (test accuracy beside)")
            ax.set_xlim(min(rates) / 2, max(rates) * 4)
        else:
            for k in _order(onm):
                rs = sorted(onm[k], key=lambda r: r["n"])
                ax.plot([r["n"] for r in rs], [r["samples_per_s"] for r in rs], "o-", color=COLORS.get(k, "grey"),
                        label=_label(data, k))
            shape = next(iter(onm.values()))[0]["shape"]
            ns = sorted({r["n"] for rs in onm.values() for r in rs})
            ax.set(xscale="log", yscale="log", xlabel="neurons n", ylabel="training samples/s (higher is better)",
                   title=f"Linear(n,n)+LIF, B={shape[0]}, T={shape[1]} (random data)")
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.minorticks_off()
            ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    m = data["machine"]
    fig.suptitle(f"{common.describe_machine(m)} — {m['date'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _png_path(json_path):
    return os.path.splitext(json_path)[0] + ".png"


def _show(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _plot_or_say(data, json_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot: matplotlib is not installed")
        return
    png = plot(data, _png_path(json_path))
    if png:
        print(f"plot:    {_show(png)}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.report:
        with open(args.report) as f:
            data = json.load(f)
        if data.get("schema") != SCHEMA:
            raise SystemExit(f"{args.report}: not a bench_train result (schema {data.get('schema')!r})")
        print(markdown(data))
        if not args.no_plot:
            _plot_or_say(data, args.report)
        return 0
    cfg = config_from_args(args)
    data = run(cfg, args.out)
    print()
    print(markdown(data))
    print(f"results: {_show(data['path'])}")
    if not args.no_plot:
        _plot_or_say(data, data["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
