"""lif_cuda on the CPU: fused against the pure-PyTorch reference and Rockpool's LIFNeuronTorch.

    python bench/bench_cpu.py                     # the four shapes, 5 repeats, ~3-5 min on 2 cores
    python bench/bench_cpu.py --quick             # small shapes, 2 repeats
    python bench/bench_cpu.py --shapes 16x500x1024 --repeats 10
    python bench/bench_cpu.py --memory            # also peak RSS (a worker process; longer)
    python bench/bench_cpu.py --rss               # also peak RSS over 100 training calls (pool on/off)

`fused_nopool` is the fused op with lif_cuda's CPU output pool off (every large output fresh memory,
page-faulted in on first touch): the pool's effect, side by side.

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

DEFAULT_IMPLS = "fused,fused_nopool,reference,rockpool"
# Issue 12's targets: forward >= 0.6 and forward+backward >= 0.5 of copy_ bandwidth (8 and 24 bytes per
# element) at these shapes; forward+backward >= these multiples of Rockpool's time.
TARGET_BW_SHAPES = ([128, 100, 1024], [16, 500, 1024])
TARGET_BW = {"forward": 0.6, "forward+backward": 0.5}
BYTES_PER_ELEMENT = {"forward": 8, "forward+backward": 24}
TARGET_ROCKPOOL = {(16, 500, 1024): 100.0, (128, 100, 1024): 100.0, (32, 100, 512): 60.0}
RSS_SHAPE, RSS_CALLS = "128x100x1024", 100


def parse(argv):
    p = build_parser(prog="python bench/bench_cpu.py", description=__doc__)
    p.set_defaults(impls=DEFAULT_IMPLS, workload="layer", no_memory=True)
    p.add_argument("--memory", action="store_true", help="also measure peak RSS (in a worker process)")
    p.add_argument("--rss", action="store_true",
                   help=f"also peak RSS over {RSS_CALLS} forward+backward calls at {RSS_SHAPE}, pool on and off")
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("bench_cpu.py measures the CPU; use `python -m bench --device cuda` for a GPU")
    if args.workload != "layer":
        p.error("bench_cpu.py runs the layer workload only; use `python -m bench --workload onm`")
    cfg = config_from_args(args)
    cfg["memory"] = args.memory
    cfg["rss"] = args.rss
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


def _targets(data, recs):
    """Issue 12's targets, each (text, met or None when not measured), stored in the JSON too."""
    out = []
    copy_gbps = {tuple(b["shape"]): b.get("copy_gbps") for b in data["bandwidth"]}
    for shape in map(tuple, TARGET_BW_SHAPES):
        for mode, goal in TARGET_BW.items():
            r = recs.get((shape, mode, "fused"), {})
            t, cg = r.get("median_s"), copy_gbps.get(shape)
            if not (t and cg):
                out.append((f"{mode} at {common.shape_str(shape)}: not measured", None))
                continue
            gbps = BYTES_PER_ELEMENT[mode] * shape[0] * shape[1] * shape[2] / t / 1e9
            frac = gbps / cg
            out.append((f"fused {mode} at {common.shape_str(shape)}: {gbps:.1f} GB/s at "
                        f"{BYTES_PER_ELEMENT[mode]} B/element = {frac:.2f} of copy_ (target ≥ {goal:g})", frac >= goal))
    for shape, goal in TARGET_ROCKPOOL.items():
        f, rp = (recs.get((shape, "forward+backward", k), {}).get("median_s") for k in ("fused", "rockpool"))
        if not (f and rp):
            out.append((f"forward+backward vs Rockpool at {common.shape_str(shape)}: not measured", None))
            continue
        out.append((f"fused forward+backward vs Rockpool at {common.shape_str(shape)}: {rp / f:.0f}× "
                    f"(target ≥ {goal:g}×)", rp / f >= goal))
    for r in data.get("rss", []):
        if "error" in r:
            out.append((f"peak RSS (pool {r.get('pool_mb')} MB): {r['error']}", None))
            continue
        ok = r["ratio"] <= 1.1
        out.append((f"peak RSS over {r['calls']} forward+backward calls at {common.shape_str(r['shape'])}, pool "
                    f"{'on' if r['pool_mb'] else 'off'}: {r['many_calls_peak_bytes'] / 2**20:.0f} MiB = "
                    f"{r['ratio']:.2f}× one call's {r['one_call_peak_bytes'] / 2**20:.0f} MiB (target ≤ 1.10)",
                    ok if r["pool_mb"] else None))
    return out


def summary(data):
    recs = _records(data)
    impls = [k for k in ("fused", "fused_nopool", "reference", "rockpool")
             if data["impls"].get(k, {}).get("available")]
    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in data["results"] if r["workload"] == "layer"))
    ratio_of = {"fused_nopool": "no pool / fused", "reference": "reference / fused", "rockpool": "Rockpool / fused"}
    lines = []
    head = ["shape (B,T,N)", "pass"] + [data["impls"][k]["label"] for k in impls]
    head += [ratio_of[k] for k in impls if k != "fused"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
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
                if k != "fused":
                    ratio = meds[k] / meds["fused"] if meds.get(k) and meds.get("fused") else None
                    row.append(f"{ratio:.1f}×" if ratio else "—")
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Fused forward bandwidth (bytes: input read + spikes written; same run):")
    for b in data["bandwidth"]:
        lines.append(
            f"  {common.shape_str(b['shape']):16s} fused {b['fused_forward_gbps']:6.1f} GB/s | "
            f"copy_ {b.get('copy_gbps', float('nan')):6.1f} GB/s -> {b.get('fused_over_copy', float('nan')):.2f} | "
            f"clone {b.get('clone_gbps', float('nan')):6.1f} GB/s -> {b.get('fused_over_clone', float('nan')):.2f}")
    lines.append("")
    if data["checks"]:
        lines.append("Spikes equal to fused (torch.equal, same input, zero initial state):")
        for c in data["checks"]:
            if c["impl"] == "fused":
                continue
            eq = c.get("spikes_equal")
            lines.append(f"  {common.shape_str(c['shape']):16s} {data['impls'][c['impl']]['label']:30s} "
                         + ("equal" if eq else f"NOT equal ({100 * c.get('agreement', 0):.3f}% of entries agree)"))
        lines.append("")
    lines.append("Targets (issue 12):")
    data["targets"] = []
    for text, met in _targets(data, recs):
        data["targets"].append({"target": text, "met": met})
        lines.append(f"  {text}" + ("" if met is None else (": met" if met else ": MISSED")))
    m = data["machine"]
    lines.append("")
    load = [f"{v[0]:.1f}" if v else "?" for v in (m.get("load_average_at_start"), m.get("load_average_at_end"))]
    lines.append(f"Machine: {common.describe_machine(m)}; 1-min load average {load[0]} at start, {load[1]} at "
                 "end (a loaded machine makes these numbers noisy).")
    return "\n".join(lines)


def _rss(cfg):
    """bench/peak_rss.py in fresh processes, pool on and off."""
    import json
    import subprocess

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_rss.py")
    out = []
    for pool_mb in (1024, 0):
        cmd = [sys.executable, script, "--shape", RSS_SHAPE, "--calls", str(RSS_CALLS), "--pool-mb", str(pool_mb)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out.append({"pool_mb": pool_mb, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"peak RSS, pool {pool_mb} MB: {out[-1]['ratio']:.3f}× one call", flush=True)
    return out


def _show(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(argv=None):
    cfg = parse(argv)
    data = run_suite(cfg)
    if cfg.get("rss"):
        data["rss"] = _rss(cfg)
    print()
    print(summary(data))
    common.write_json(data["path"], {k: v for k, v in data.items() if k != "path"})
    print(f"\nresults: {_show(data['path'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
