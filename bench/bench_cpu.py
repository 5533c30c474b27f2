"""lif_cuda on the CPU: fused against the pure-PyTorch reference and Rockpool's LIFNeuronTorch.

    python bench/bench_cpu.py                     # the four shapes, 5 repeats, ~2-4 min on 2 cores
    python bench/bench_cpu.py --quick             # small shapes, 2 repeats
    python bench/bench_cpu.py --shapes 16x500x1024 --repeats 10
    python bench/bench_cpu.py --memory            # also peak RSS (a worker process; longer)

Forward (inference, under torch.no_grad) and forward+backward (loss = spikes.sum()) at
(B,T,N) = (1,1000,128), (32,100,512), (16,500,1024), (128,100,1024), float32. Every implementation
is warmed up, then timed; the median of >= 5 calls is reported (the fast ones keep sampling up to
--max-repeats within --budget seconds). All implementations of a point run interleaved, round by
round. Rockpool is used when installed (`pip install rockpool==3.1.0`); its spikes are checked to
equal ours (torch.equal) on every shape. The fused forward's bandwidth (input read + spikes written)
is set against `copy_` (and `clone`) of the same bytes, measured in the same run.

This is the first-issue benchmark; `python -m bench` is the full suite (more peers, the Open
Neuromorphic workload, plots). Both write JSON to bench/results/.
"""
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from bench import common  # noqa: E402
from bench.run import build_parser, config_from_args, run_suite  # noqa: E402

DEFAULT_IMPLS = "fused,reference,rockpool"
TARGET_ROCKPOOL = 60.0  # issue 2: fused forward+backward >= 60x Rockpool at every shape
TARGET_BANDWIDTH = 0.5  # issue 2: forward >= 0.5 of copy_ bandwidth at (16,500,1024)
TARGET_SHAPE = [16, 500, 1024]


def parse(argv):
    p = build_parser(prog="python bench/bench_cpu.py", description=__doc__)
    p.set_defaults(impls=DEFAULT_IMPLS, workload="layer", no_memory=True)
    p.add_argument("--memory", action="store_true", help="also measure peak RSS (in a worker process)")
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("bench_cpu.py measures the CPU; use `python -m bench --device cuda` for a GPU")
    if args.workload != "layer":
        p.error("bench_cpu.py runs the layer workload only; use `python -m bench --workload onm`")
    cfg = config_from_args(args)
    cfg["memory"] = args.memory
    cfg["stem"] = "bench_cpu"
    # Issue 2 asks for >= 5 repeats for every implementation: no fewer for the slow ones, none skipped.
    cfg["slow_repeats"] = cfg["repeats"]
    cfg["max_call_s"] = 0
    return cfg


def _records(data):
    out = {}
    for r in data["results"]:
        if r["workload"] == "layer":
            out[(tuple(r["shape"]), r["mode"], r["impl"])] = r
    return out


def summary(data):
    recs = _records(data)
    impls = [k for k in ("fused", "reference", "rockpool") if data["impls"].get(k, {}).get("available")]
    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in data["results"] if r["workload"] == "layer"))
    lines = []
    head = ["shape (B,T,N)", "pass"] + [data["impls"][k]["label"] for k in impls]
    head += [{"reference": "reference / fused", "rockpool": "Rockpool / fused"}[k] for k in impls if k != "fused"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    worst_rockpool = None
    for shape in shapes:
        for mode in ("forward", "forward+backward"):
            row = [common.shape_str(shape), mode]
            meds = {}
            for k in impls:
                r = recs.get((shape, mode, k), {})
                meds[k] = r.get("median_s")
                cell = common.fmt_time(meds[k]) if meds[k] else (r.get("skipped") or r.get("error") or "—")
                if meds[k]:
                    cell += f" (n={r['n']})"
                row.append(cell)
            for k in impls:
                if k == "fused":
                    continue
                ratio = meds[k] / meds["fused"] if meds.get(k) and meds.get("fused") else None
                row.append(f"{ratio:.1f}×" if ratio else "—")
                if k == "rockpool" and mode == "forward+backward" and ratio:
                    if worst_rockpool is None or ratio < worst_rockpool[0]:
                        worst_rockpool = (ratio, shape)
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Fused forward bandwidth (bytes: input read + spikes written; same run):")
    bw_target = None
    for b in data["bandwidth"]:
        lines.append(
            f"  {common.shape_str(b['shape']):16s} fused {b['fused_forward_gbps']:6.1f} GB/s | "
            f"copy_ {b.get('copy_gbps', float('nan')):6.1f} GB/s -> {b.get('fused_over_copy', float('nan')):.2f} | "
            f"clone {b.get('clone_gbps', float('nan')):6.1f} GB/s -> {b.get('fused_over_clone', float('nan')):.2f}")
        if b["shape"] == TARGET_SHAPE:
            bw_target = b.get("fused_over_copy")
    lines.append("")
    if data["checks"]:
        lines.append("Spikes equal to fused (torch.equal, same input, zero initial state):")
        for c in data["checks"]:
            if c["impl"] == "fused":
                continue
            eq = c.get("spikes_equal")
            lines.append(f"  {common.shape_str(c['shape']):16s} {data['impls'][c['impl']]['label']:26s} "
                         + ("equal" if eq else f"NOT equal ({100 * c.get('agreement', 0):.3f}% of entries agree)"))
        lines.append("")
    lines.append("Targets (issue 2):")
    if worst_rockpool:
        ok = worst_rockpool[0] >= TARGET_ROCKPOOL
        lines.append(f"  fused forward+backward vs Rockpool: smallest {worst_rockpool[0]:.1f}× at "
                     f"{common.shape_str(worst_rockpool[1])} (target ≥ {TARGET_ROCKPOOL:g}× at every shape: "
                     f"{'met' if ok else 'MISSED'})")
    else:
        lines.append("  fused vs Rockpool: not measured (Rockpool not installed?)")
    if bw_target is not None:
        lines.append(f"  fused forward at (16,500,1024): {bw_target:.2f} of copy_ bandwidth (target ≥ "
                     f"{TARGET_BANDWIDTH:g}: {'met' if bw_target >= TARGET_BANDWIDTH else 'MISSED'})")
    m = data["machine"]
    lines.append("")
    load = [f"{v[0]:.1f}" if v else "?" for v in (m.get("load_average_at_start"), m.get("load_average_at_end"))]
    lines.append(f"Machine: {common.describe_machine(m)}; 1-min load average {load[0]} at start, {load[1]} at "
                 "end (a loaded machine makes these numbers noisy).")
    return "\n".join(lines)


def _show(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(argv=None):
    cfg = parse(argv)
    data = run_suite(cfg)
    print()
    print(summary(data))
    print(f"\nresults: {_show(data['path'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
