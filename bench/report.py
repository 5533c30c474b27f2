"""Markdown tables from benchmark JSON (for the README's performance section).

    python bench/report.py bench/results/bench-cpu-20260101-120000.json [more.json ...]
    python bench/report.py --latest            # the newest JSON in bench/results/
"""
import argparse
import glob
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from bench import common  # noqa: E402

IMPL_ORDER = ("fused", "reference", "compiled", "rockpool", "snntorch", "spikingjelly", "norse", "exodus")
MODE_ORDER = ("forward", "backward", "forward+backward")
TARGETS = {  # issue 2 and issue 4, forward+backward on the CPU: fused at least this much faster
    "rockpool": 100.0,
    "snntorch": 10.0,
    "spikingjelly": 10.0,
    "norse": 10.0,
    "exodus": 10.0,
}


def _impls(data):
    present = {r["impl"] for r in data["results"] if not r.get("baseline")}
    return [k for k in IMPL_ORDER if k in present]


def _label(data, key):
    return data["impls"].get(key, {}).get("label", key)


def _index(data, workload):
    """{(shape tuple, mode): {impl: record}} and the ordered list of rows."""
    table, rows = {}, []
    for r in data["results"]:
        if r["workload"] != workload or r.get("baseline"):
            continue
        row = (tuple(r["shape"]), r["mode"])
        if row not in table:
            table[row] = {}
            rows.append(row)
        table[row][r["impl"]] = r
    ordered = []
    for shape in dict.fromkeys(s for s, _ in rows):
        ordered += sorted([rm for rm in rows if rm[0] == shape],
                          key=lambda rm: MODE_ORDER.index(rm[1]) if rm[1] in MODE_ORDER else 9)
    return table, ordered


def _row_label(workload, shape, mode):
    if workload == "onm":
        return f"n={shape[2]}", mode
    return common.shape_str(shape), mode


def _cell_time(rec, notes):
    if rec is None:
        return ""
    if rec.get("skipped"):
        return "skip" + _note(notes, rec["skipped"])
    if rec.get("error"):
        return "error" + _note(notes, rec["error"])
    med = rec["median_s"]
    spread = (rec["p75_s"] - rec["p25_s"]) / 2 / med * 100 if med else 0
    if rec.get("warmup_only"):
        mark = _note(
            notes, "one call only: it took longer than --max-call-s (its first call, so it may include one-time costs)"
        )
    elif rec.get("reduced_repeats"):
        mark = _note(notes, "fewer repeats: its first call took longer than --slow-call-s")
    else:
        mark = ""
    return f"{common.fmt_time(med)} ±{spread:.0f}%{mark}"


def _note(notes, text):
    if text not in notes:
        notes.append(text)
    return f" [{notes.index(text) + 1}]"


def _median(rec):
    return rec.get("median_s") if rec else None


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def workload_tables(data, workload):
    table, rows = _index(data, workload)
    if not rows:
        return ""
    impls = _impls(data)
    notes = []
    first = "neurons" if workload == "onm" else "shape (B,T,N)"
    parts = []
    title = {"layer": "LIF layer alone", "onm": "Open Neuromorphic set-up: Linear(n,n) + LIF"}[workload]
    if workload == "onm":
        B, T = rows[0][0][0], rows[0][0][1]
        title += f", B={B}, T={T}"
    parts.append(f"### {title}\n")

    parts.append("Wall time per call (median ± half the inter-quartile range):\n")
    parts.append(_table([first, "pass"] + [_label(data, k) for k in impls],
                        [list(_row_label(workload, *rm)) + [_cell_time(table[rm].get(k), notes) for k in impls]
                         for rm in rows]))

    others = [k for k in impls if k != "fused"]
    if "fused" in impls and others:
        srows = []
        for rm in rows:
            f = _median(table[rm].get("fused"))
            cells = []
            for k in others:
                o = _median(table[rm].get(k))
                cells.append(f"{o / f:.1f}×" if f and o else "")
            srows.append(list(_row_label(workload, *rm)) + cells)
        parts.append("\nSpeed-up of lif_cuda fused (time of the other / time of fused):\n")
        parts.append(_table([first, "pass"] + [_label(data, k) for k in others], srows))

    if any(r.get("peak_mem_bytes") is not None for r in data["results"] if r["workload"] == workload):
        mrows = []
        for rm in rows:
            if workload == "onm" and rm[1] == "forward+backward":
                continue
            mrows.append(list(_row_label(workload, *rm)) + [
                common.fmt_bytes(table[rm][k].get("peak_mem_bytes"))
                if k in table[rm] and "median_s" in table[rm][k]
                else ""
                for k in impls])
        how = ("torch.cuda.max_memory_allocated" if data["machine"].get("gpu_model") and
               str(data["machine"].get("device", "")).startswith("cuda") else "peak RSS")
        parts.append(f"\nPeak memory above inputs and parameters ({how}"
                     + ("; backward: peak during backward above the memory before forward" if workload == "onm" else "")
                     + "):\n")
        parts.append(_table([first, "pass"] + [_label(data, k) for k in impls], mrows))
    if notes:
        parts.append("\n" + "\n".join(f"[{i + 1}] {n}" for i, n in enumerate(notes)))
    return "\n".join(parts) + "\n"


def bandwidth_table(data):
    rows = data.get("bandwidth") or []
    if not rows:
        return ""
    out = ["### Fused forward bandwidth against copies of the same bytes, measured in the same run\n",
           "Bytes counted: input read + spikes written (float32, forward under no_grad, nothing saved); "
           "copy_ writes into a preallocated tensor, clone allocates its output as the fused op does.\n"]
    out.append(_table(
        ["shape (B,T,N)", "MB moved", "fused GB/s", "copy_ GB/s", "fused / copy_", "clone GB/s", "fused / clone"],
        [[common.shape_str(r["shape"]), f"{r['bytes'] / 1e6:.3g}", f"{r['fused_forward_gbps']:.1f}",
          f"{r.get('copy_gbps', 0):.1f}", f"{r.get('fused_over_copy', 0):.2f}",
          f"{r.get('clone_gbps', 0):.1f}", f"{r.get('fused_over_clone', 0):.2f}"] for r in rows]))
    return "\n".join(out) + "\n"


def checks_table(data):
    rows = data.get("checks") or []
    if not rows:
        return ""
    out = ["### Spikes against lif_cuda fused (layer workload, same input, zero initial state)\n"]
    out.append(_table(
        ["shape (B,T,N)", "implementation", "spikes per neuron per step", "multi-spike steps", "torch.equal",
         "same entries"],
        [[common.shape_str(r["shape"]), _label(data, r["impl"]),
          f"{r.get('spike_rate', float('nan')):.4f}", f"{r.get('multi_spike_fraction', float('nan')):.4f}",
          ("yes" if r.get("spikes_equal") else "no") if "spikes_equal" in r else r.get("error", ""),
          f"{100 * r.get('agreement', float('nan')):.2f}%"] for r in rows]))
    return "\n".join(out) + "\n"


def targets_lines(data):
    """The issues' targets, measured: the smallest forward+backward speed-up of fused over each peer."""
    lines = []
    for workload in ("layer", "onm"):
        table, rows = _index(data, workload)
        for peer in [k for k in _impls(data) if k != "fused"]:
            worst = None
            for rm in rows:
                if rm[1] != "forward+backward":
                    continue
                f, o = _median(table[rm].get("fused")), _median(table[rm].get(peer))
                if f and o and (worst is None or o / f < worst[0]):
                    worst = (o / f, rm[0])
            if worst is None:
                continue
            goal = TARGETS.get(peer)
            met = "met" if goal is not None and worst[0] >= goal else "MISSED"
            verdict = "" if goal is None else f" (target ≥ {goal:g}×: {met})"
            where = f"n={worst[1][2]}" if workload == "onm" else common.shape_str(worst[1])
            lines.append(f"- {workload}: fused forward+backward vs {_label(data, peer)}: at least "
                         f"{worst[0]:.1f}× (smallest at {where}){verdict}")
    for r in data.get("bandwidth") or []:
        if "fused_over_copy" in r:
            lines.append(f"- fused forward at {common.shape_str(r['shape'])}: {r['fused_over_copy']:.2f} of copy_ "
                         f"bandwidth, {r.get('fused_over_clone', float('nan')):.2f} of clone")
    return ("### Measured against the targets\n\n" + "\n".join(lines) + "\n") if lines else ""


def markdown(data):
    m = data["machine"]
    head = [f"## lif_cuda benchmark — {common.describe_machine(m)}", "",
            f"{m['date']}, commit {str(m.get('git_commit'))[:10]}{' (dirty)' if m.get('git_dirty') else ''}, "
            f"device {m['device']}, load average at start {_load(m.get('load_average_at_start'))}"
            + (f", at end {_load(m.get('load_average_at_end'))}" if m.get("load_average_at_end") else "") + ".", ""]
    head += [f"- {n}" for n in data.get("notes", [])]
    head.append("")
    head.append("Implementations:")
    for info in data["impls"].values():
        ver = f" {info['version']}" if info.get("version") else ""
        state = "" if info.get("available") else f" — not run: {info.get('reason')}"
        head.append(f"- **{info['label']}**{ver}: {info['equation']}{state}")
    body = [workload_tables(data, w) for w in ("layer", "onm")]
    body += [bandwidth_table(data), checks_table(data), targets_lines(data)]
    return "\n".join(head) + "\n\n" + "\n".join(b for b in body if b)


def _load(v):
    return "/".join(f"{x:.1f}" for x in v) if v else "?"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="benchmark JSON files")
    p.add_argument("--latest", action="store_true", help="the newest JSON in bench/results/")
    args = p.parse_args(argv)
    files = list(args.files)
    if args.latest or not files:
        found = sorted(glob.glob(os.path.join(common.RESULTS_DIR, "*.json")), key=os.path.getmtime)
        if not found:
            p.error("no JSON given and none in bench/results/")
        files = [found[-1]]
    for path in files:
        print(markdown(common.read_json(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
