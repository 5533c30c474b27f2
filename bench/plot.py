"""PNG plots from benchmark JSON: time, speed-up over the reference, and peak memory.

    python bench/plot.py bench/results/bench-cpu-20260101-120000.json [--out DIR]
    python bench/plot.py --latest

For the onm workload the x axis is the number of neurons n (time vs neurons); for the layer
workload, one group of bars per shape (B,T,N). Files are written beside the JSON (or into --out)
as <json stem>-<workload>-{time,speedup,memory}.png.
"""
import argparse
import glob
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from bench import common  # noqa: E402
from bench.report import IMPL_ORDER, _index, _label  # noqa: E402

COLORS = {
    "fused": "#d62728",
    "reference": "#7f7f7f",
    "compiled": "#bcbd22",
    "rockpool": "#1f77b4",
    "snntorch": "#2ca02c",
    "spikingjelly": "#9467bd",
    "norse": "#ff7f0e",
    "exodus": "#17becf",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _impls(table):
    present = {k for cells in table.values() for k, r in cells.items() if r.get("median_s") is not None}
    return [k for k in IMPL_ORDER if k in present]


def _caption(data):
    m = data["machine"]
    return f"{common.describe_machine(m)} — {m['date'][:10]}, commit {str(m.get('git_commit'))[:8]}"


def _modes(rows, workload):
    want = ("forward", "backward", "forward+backward") if workload == "onm" else ("forward", "forward+backward")
    present = {m for _, m in rows}
    return [m for m in want if m in present]


def _value(table, row, key, what, data):
    rec = table.get(row, {}).get(key)
    if not rec or rec.get("median_s") is None:
        return None
    if what == "time":
        return rec["median_s"]
    if what == "memory":
        v = rec.get("peak_mem_bytes")
        return None if v is None else max(v, 0) / 2**20
    if what == "speedup":
        ref = table.get(row, {}).get("reference")
        if not ref or ref.get("median_s") is None:
            return None
        return ref["median_s"] / rec["median_s"]
    raise ValueError(what)


def plot_workload(data, workload, out_stem):
    plt = _plt()
    table, rows = _index(data, workload)
    if not rows:
        return []
    impls = _impls(table)
    modes = _modes(rows, workload)
    shapes = list(dict.fromkeys(s for s, _ in rows))
    written = []
    specs = [
        ("time", "wall time per call (s, log)", True),
        ("speedup", "speed-up over lif_cuda reference (×, log)", True),
        ("memory", "peak memory above inputs (MiB)", False),
    ]
    for what, ylabel, logy in specs:
        keys = [k for k in impls if not (what == "speedup" and k == "reference")]
        if what == "memory" and workload == "onm":
            modes_here = [m for m in modes if m != "forward+backward"]
        else:
            modes_here = modes
        if not any(_value(table, (s, m), k, what, data) is not None for s in shapes for m in modes_here for k in keys):
            continue
        fig, axes = plt.subplots(1, len(modes_here), figsize=(5.2 * len(modes_here), 4.2), squeeze=False)
        for ax, mode in zip(axes[0], modes_here):
            if workload == "onm":
                xs = [s[2] for s in shapes]
                for k in keys:
                    pts = [(x, _value(table, (s, mode), k, what, data)) for x, s in zip(xs, shapes)]
                    pts = [(x, y) for x, y in pts if y is not None]
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=_label(data, k), color=COLORS.get(k),
                                linewidth=2.5 if k == "fused" else 1.5)
                ax.set_xscale("log", base=2)
                ax.set_xticks(xs)
                ax.set_xticklabels([str(x) for x in xs])
                ax.set_xlabel("neurons n")
            else:
                width = 0.8 / max(len(keys), 1)
                for i, k in enumerate(keys):
                    vals = [_value(table, (s, mode), k, what, data) for s in shapes]
                    xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(shapes))]
                    ax.bar([x for x, v in zip(xs, vals) if v is not None], [v for v in vals if v is not None],
                           width=width, label=_label(data, k), color=COLORS.get(k))
                ax.set_xticks(range(len(shapes)))
                ax.set_xticklabels([common.shape_str(s) for s in shapes], fontsize=8)
                ax.set_xlabel("shape (B,T,N)")
            if what == "speedup":
                ax.axhline(1.0, color="black", linewidth=0.8)
            if logy:
                from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_title(mode)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
        title = {"layer": "LIF layer alone", "onm": "Linear(n,n) + LIF (Open Neuromorphic set-up)"}[workload]
        fig.suptitle(f"{title}\n{_caption(data)}", fontsize=9)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        path = f"{out_stem}-{workload}-{what}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_file(path, out_dir=None):
    data = common.read_json(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    out_stem = os.path.join(out_dir or os.path.dirname(os.path.abspath(path)), stem)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    written = []
    for workload in ("layer", "onm"):
        written += plot_workload(data, workload, out_stem)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="benchmark JSON files")
    p.add_argument("--latest", action="store_true", help="the newest JSON in bench/results/")
    p.add_argument("--out", default=None, help="directory for the PNGs (default: beside each JSON)")
    args = p.parse_args(argv)
    files = list(args.files)
    if args.latest or not files:
        found = sorted(glob.glob(os.path.join(common.RESULTS_DIR, "*.json")), key=os.path.getmtime)
        if not found:
            p.error("no JSON given and none in bench/results/")
        files = [found[-1]]
    for path in files:
        for png in plot_file(path, args.out):
            print(os.path.relpath(png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
