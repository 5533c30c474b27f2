"""PNGs of a result, beside its JSON: `<stem>-time.png` (median time per point, one panel per pass,
log scale; against neurons for the network suite) and `<stem>-memory.png` where peak memory was
measured; a suite with its own plot (train) gives `<stem>.png`."""
from bench.engine import describe_machine


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(data, value):
    """{phase: {point label: {impl: value}}} over the records that have one."""
    out = {}
    for r in data["results"]:
        v = value(r)
        if v is None:
            continue
        point = r.get("neurons") or " ".join(
            "x".join(map(str, r[k])) if isinstance(r[k], list) else str(r[k])
            for k in ("workload", "kind", "task", "shape") if k in r)
        out.setdefault(r.get("phase", ""), {}).setdefault(point, {})[r["impl"]] = v
    return out


def _figure(plt, data, series, ylabel, log):
    phases = list(series)
    fig, axes = plt.subplots(1, len(phases), figsize=(5.5 * len(phases), 4.2), squeeze=False)
    impls = [k for k in data["impls"] if any(k in c for s in series.values() for c in s.values())]
    color = {k: f"C{i % 10}" for i, k in enumerate(impls)}  # one colour per implementation in every panel
    for ax, phase in zip(axes[0], phases):
        points = list(series[phase])
        numeric = all(isinstance(p, int) for p in points)
        width = 0.8 / max(len(impls), 1)
        for i, k in enumerate(impls):
            pts = [(j, p, series[phase][p][k]) for j, p in enumerate(points) if k in series[phase][p]]
            if not pts:
                continue
            if numeric:
                ax.plot([p for _, p, _ in pts], [v for _, _, v in pts], "o-", label=k, color=color[k])
            else:
                ax.bar([j + (i - (len(impls) - 1) / 2) * width for j, _, _ in pts], [v for _, _, v in pts], width,
                       label=k, color=color[k])
        if numeric:
            ax.set_xscale("log", base=2)
            ax.set_xticks(points, [str(p) for p in points])
            ax.set_xlabel("neurons n")
        else:
            ax.set_xticks(range(len(points)), points, fontsize=7, rotation=15)
        if log:
            ax.set_yscale("log")
        ax.set(title=phase, ylabel=ylabel)
        ax.grid(True, alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    labels = [k for k in impls if k in handles]
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 0.93))
    return fig


def plot(data, stem):
    """Writes the PNGs of `data` as <stem>-*.png; returns their paths."""
    from bench.suites import SUITES

    plt = _pyplot()
    suite = SUITES[data["suite"]]
    caption = f"{data['suite']}: {describe_machine(data['machine'])} — {data['machine']['date'][:10]}"
    figures = []
    if hasattr(suite, "plot"):
        figures.append((suite.plot(data, plt, stem), f"{stem}.png"))
    else:
        time = _series(data, lambda r: r.get("median_s"))
        if time:
            figures.append((_figure(plt, data, time, "median time per call (s)", True), f"{stem}-time.png"))
        mem = _series(data, lambda r: None if r.get("peak_mem_bytes") is None else max(r["peak_mem_bytes"], 0) / 2**20)
        if mem:
            figures.append((_figure(plt, data, mem, "peak memory above inputs (MiB)", False), f"{stem}-memory.png"))
    written = []
    for fig, path in figures:
        if fig is None:
            continue
        fig.suptitle(caption, fontsize=9)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
