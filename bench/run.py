"""The benchmark suite: lif_cuda fused against its reference, torch.compile of the reference and the
other SNN libraries, in one interleaved run; JSON under bench/results/, a Markdown summary printed.

    python -m bench                          # both workloads on the CPU, every installed impl
    python -m bench --quick                  # small shapes, few repeats: checks that all works
    python -m bench --workload onm --device cuda
    python -m bench --impls fused,reference,rockpool --shapes 16x500x1024 --repeats 10

Peers run slightly different neuron equations (see bench/impls.py and the "equation" of each impl
in the JSON); only Rockpool's LIFNeuronTorch computes exactly our neuron, and its spikes are
checked to equal ours.
"""
import argparse
import gc
import math
import os
import sys
import tempfile

if __package__ in (None, ""):  # run as a file: python bench/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

import torch  # noqa: E402

from bench import common  # noqa: E402
from bench import impls as impls_mod
from bench.engine import Slot, _Progress, run_interleaved  # noqa: E402
from bench.worker import RemoteCase, Worker, WorkerError, Workers  # noqa: E402
from bench.workloads import LAYER_MODES  # noqa: E402

LAYER_SHAPES = [(1, 1000, 128), (32, 100, 512), (16, 500, 1024), (128, 100, 1024)]
ONM_NEURONS = {"cpu": [512, 1024, 2048, 4096], "cuda": [512, 1024, 2048, 4096, 8192, 16384]}
QUICK = dict(
    shapes=[(1, 200, 64), (4, 50, 256)],
    neurons=[128, 256],
    steps=50,
    batch=4,
    repeats=2,
    max_repeats=3,
    budget_s=0.2,
    compile_max_t=50,
)

PEER_NOTE = (
    "Peers run slightly different neuron equations (each configured as close to lif_cuda's as its "
    "API allows; see 'equation' per implementation). Only Rockpool's LIFNeuronTorch computes exactly "
    "lif_cuda's neuron, and its spikes are checked to be equal."
)


def build_parser(prog=None, description=__doc__):
    p = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default cpu)")
    p.add_argument("--workload", default="all", choices=("layer", "onm", "all"),
                   help="layer: the LIF layer alone; onm: Linear(n,n)+LIF (Open Neuromorphic); all: both (default)")
    p.add_argument("--impls", default="all",
                   help=f"comma-separated, from {','.join(impls_mod.IMPLS)} (default all; missing peers are skipped)")
    p.add_argument("--shapes", default=None, help="layer shapes BxTxN,... (default " +
                   ",".join("x".join(map(str, s)) for s in LAYER_SHAPES) + ")")
    p.add_argument("--neurons", default=None, help="onm sizes n,... (default 512..4096 on CPU, ..16384 on CUDA)")
    add_timing_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--quick", action="store_true", help="tiny shapes and repeats, to check that everything works")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/<stem>-<device>-<date>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def add_timing_options(p):
    """The options of the onm set-up and of the interleaved timing (engine.py), shared with
    bench_train.py."""
    p.add_argument("--batch", type=int, default=16, help="onm batch size (default 16)")
    p.add_argument("--steps", type=int, default=500, help="onm time steps (default 500)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per point after warm-up (default 5)")
    p.add_argument("--max-repeats", type=int, default=20, help="fast impls keep sampling up to this (default 20)")
    p.add_argument("--budget", type=float, default=1.0, dest="budget_s",
                   help="seconds a fast impl may spend per point on extra repeats (default 1)")
    p.add_argument("--slow-call-s", type=float, default=10.0,
                   help="an impl whose warm-up call takes longer gets --slow-repeats (default 10 s)")
    p.add_argument("--slow-repeats", type=int, default=3, help="repeats for slow impls (default 3)")
    p.add_argument("--max-call-s", type=float, default=60.0,
                   help="cap on one call (default 60 s; 0 = no cap): an impl whose warm-up call takes longer "
                        "is timed by that call alone, and an impl is skipped where its projected call time "
                        "(extrapolated from the points it already ran, in B*N*T^2) exceeds the cap")
    p.add_argument("--compile-max-t", type=int, default=100,
                   help="run torch.compile(reference) only where T <= this: it unrolls the time loop (default 100)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")


def timing_config(args):
    return dict(
        batch=args.batch,
        steps=args.steps,
        repeats=args.repeats,
        max_repeats=max(args.max_repeats, args.repeats),
        budget_s=args.budget_s,
        slow_call_s=args.slow_call_s,
        slow_repeats=args.slow_repeats,
        max_call_s=args.max_call_s,
        compile_max_t=args.compile_max_t,
        threads=args.threads,
    )


def config_from_args(args):
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev_type = torch.device(device).type
    if dev_type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device")
    cfg = dict(
        device=device,
        workloads=["layer", "onm"] if args.workload == "all" else [args.workload],
        impls=args.impls,
        shapes=common.parse_shapes(args.shapes) if args.shapes else list(LAYER_SHAPES),
        neurons=(
            common.parse_ints(args.neurons) if args.neurons else list(ONM_NEURONS.get(dev_type, ONM_NEURONS["cpu"]))
        ),
        **timing_config(args),
        seed=args.seed,
        memory=not args.no_memory,
        quick=args.quick,
        out=args.out,
        progress=not args.no_progress,
        stem="bench",
    )
    if args.quick:
        cfg.update(QUICK)
        if args.shapes:
            cfg["shapes"] = common.parse_shapes(args.shapes)
        if args.neurons:
            cfg["neurons"] = common.parse_ints(args.neurons)
    try:
        impls_mod.select(cfg["impls"])
    except ValueError as exc:
        raise SystemExit(f"--impls: {exc}") from None
    if min(cfg["repeats"], cfg["slow_repeats"]) < 1:
        raise SystemExit("--repeats and --slow-repeats must be >= 1")
    return cfg


# ------------------------------------------------------------------------------------ the run
def _size(shape):
    B, T, N = shape
    return B * N * T * T  # the Python-loop implementations' backward grows like T^2 (see README)


def _modes(workload, mode):
    return [mode] if workload == "layer" else ["forward", "backward", "forward+backward"]


def _project(history, size):
    """Expected seconds per call at `size` from (size, seconds) of the points already run, or None
    where it already ran at a size at least as large. Beyond that: a power law through the two
    largest points when they are far enough apart (exponent clamped to [1, 3]), else linear."""
    pts = sorted(history)
    s1, t1 = pts[-1]
    if size <= s1:
        return None
    power = 1.0
    if len(pts) >= 2:
        s0, t0 = pts[-2]
        if s1 >= 1.5 * s0 and t1 > t0 > 0:
            power = min(3.0, max(1.0, math.log(t1 / t0) / math.log(s1 / s0)))
    return t1 * (size / s1) ** power


def _record(workload, shape, mode, impl_key, **kw):
    r = dict(workload=workload, shape=list(shape), n=shape[2], mode=mode, impl=impl_key)
    r.update(kw)
    return r


def _summary_fields(samples, slot, cfg):
    s = common.summarize(samples) or {}
    s["samples_s"] = samples
    s["warmup_s"] = slot.warmup_s
    s["reduced_repeats"] = slot.min_repeats < cfg["repeats"] or slot.warmup_only
    if slot.warmup_only:
        s["warmup_only"] = True
    return s


def _memory_spec(workload, impl_key, shape, mode, cfg):
    return dict(workload=workload, impl=impl_key, shape=list(shape), mode=mode, device=cfg["device"],
                seed=cfg["seed"], compile_max_t=cfg["compile_max_t"])


def run_point(data, cfg, workload, shape, mode, chosen, availability, rates, progress, mem_specs):
    """Times every chosen impl at one point, interleaved, and appends the records. Each impl runs in
    a fresh worker process of its own (see worker.py): what it finds in its heap is what its own
    calls at this point left there."""
    workers = Workers(cfg["threads"])
    try:
        _run_point(data, cfg, workload, shape, mode, chosen, availability, rates, progress, mem_specs, workers)
    finally:
        workers.close()


def _run_point(data, cfg, workload, shape, mode, chosen, availability, rates, progress, mem_specs, workers):
    device = cfg["device"]
    is_cuda = torch.device(device).type == "cuda"
    label = f"{workload} {common.shape_str(shape)} {mode}"
    slots = []
    todo = []
    for impl in chosen:
        why = availability[impl.key] or impl.skip(shape, cfg)
        rate_key = (impl.key, workload, mode)
        if not why and cfg["max_call_s"] and rates.get(rate_key):
            projected = _project(rates[rate_key], _size(shape))
            if projected is not None and projected > cfg["max_call_s"]:
                why = f"projected {projected:.0f} s per call > --max-call-s {cfg['max_call_s']:g}"
        if why:
            for m in _modes(workload, mode):
                data["results"].append(_record(workload, shape, m, impl.key, skipped=why))
            continue
        todo.append(impl)
    baseline_keys = ("copy_", "clone") if workload == "layer" and mode == "forward" else ()
    for key in [i.key for i in todo] + list(baseline_keys):
        workers.get(key)  # start them all now: they import torch and their library concurrently
    for impl in todo:
        spec = _memory_spec(workload, impl.key, shape, mode, cfg)
        try:
            case = RemoteCase(workers.get(impl.key), spec)
        except WorkerError as exc:
            for m in _modes(workload, mode):
                data["results"].append(_record(workload, shape, m, impl.key, error=str(exc)[:300]))
            progress.write(f"  {impl.key} at {label} failed to build: {exc}")
            continue
        slot = Slot(impl.key, case, impl.warmup)
        slot.spec = spec
        slots.append(slot)
    baselines = []
    for key in baseline_keys:
        spec = dict(workload=key, impl=key, shape=list(shape), mode="forward", device=device, seed=cfg["seed"])
        try:
            baselines.append(Slot(key, RemoteCase(workers.get(key), spec), 1))
        except WorkerError as exc:
            progress.write(f"  {key} baseline failed: {exc}")

    run_interleaved(slots + baselines, repeats=cfg["repeats"], max_repeats=cfg["max_repeats"],
                    budget_s=cfg["budget_s"], slow_call_s=cfg["slow_call_s"],
                    slow_repeats=cfg["slow_repeats"], progress=progress, label=label,
                    over_cap_s=cfg["max_call_s"] or None)

    for slot in slots + baselines:
        if slot.error:
            for m in _modes(workload, mode):
                data["results"].append(_record(workload, shape, m, slot.key, error=slot.error))
            progress.write(f"  {slot.key} at {label} failed: {slot.error}")
            continue
        phases = dict(slot.samples)
        if workload == "onm":  # the two phases of each sample, added
            phases["forward+backward"] = [f + b for f, b in zip(slot.samples["forward"], slot.samples["backward"])]
        for phase, samples in phases.items():
            rec = _record(workload, shape, phase, slot.key, **_summary_fields(samples, slot, cfg))
            if slot in baselines:
                rec["baseline"] = True
                rec["bytes"] = slot.case.bytes
            data["results"].append(rec)
        if slot in slots:
            total = sum(common.summarize(v)["median_s"] for v in slot.samples.values())
            rates.setdefault((slot.key, workload, mode), []).append((_size(shape), total))
            if cfg["memory"] and slot.warmup_only:
                pass  # one more call over --max-call-s is not worth its memory figure
            elif cfg["memory"]:
                if is_cuda:
                    try:
                        mem = slot.case.run_memory()
                        _attach_memory(data, slot.spec, mem)
                    except Exception as exc:
                        progress.write(f"  memory of {slot.key} at {label} failed: {exc}")
                else:
                    mem_specs.append(slot.spec)

    if workload == "layer" and mode == "forward":
        _spike_checks(data, shape, slots)
        _bandwidth(data, shape, slots, baselines)
    for slot in slots + baselines:
        slot.case.free()
        slot.case = None
    gc.collect()
    if is_cuda:
        torch.cuda.empty_cache()


def _spike_checks(data, shape, slots):
    by_key = {s.key: s for s in slots if not s.error}
    base_key = "fused" if "fused" in by_key else ("reference" if "reference" in by_key else None)
    if base_key is None:
        return
    tmp = os.path.join(tempfile.gettempdir(), f"lif_bench_spikes_{os.getpid()}.pt")
    try:
        base = by_key[base_key].case.spikes_btn(tmp)
    except WorkerError:
        return
    for key, slot in by_key.items():
        try:
            s = base if key == base_key else slot.case.spikes_btn(tmp)
        except WorkerError as exc:
            data["checks"].append(dict(shape=list(shape), impl=key, error=str(exc)[:200]))
            continue
        data["checks"].append(dict(
            shape=list(shape), impl=key, compared_with=base_key,
            spikes_equal=bool(torch.equal(s, base)),
            agreement=float((s == base).float().mean()),
            spike_rate=float(s.mean()),
            multi_spike_fraction=float((s > 1).float().mean()),
        ))


def _bandwidth(data, shape, slots, baselines):
    fused = next((s for s in slots if s.key == "fused" and not s.error), None)
    if fused is None:
        return
    B, T, N = shape
    nbytes = 2 * B * T * N * 4  # input read + spikes written (nothing saved under no_grad)
    row = dict(shape=list(shape), bytes=nbytes, counted="input read + spikes written (float32)")
    t_fused = common.summarize(fused.samples["forward"])["median_s"]
    row["fused_forward_gbps"] = nbytes / t_fused / 1e9
    for b in baselines:
        if b.error:
            continue
        t = common.summarize(b.samples["forward"])["median_s"]
        row[f"{b.key.rstrip('_')}_gbps"] = b.case.bytes / t / 1e9
        row[f"fused_over_{b.key.rstrip('_')}"] = row["fused_forward_gbps"] / row[f"{b.key.rstrip('_')}_gbps"]
    data["bandwidth"].append(row)


def _attach_memory(data, spec, mem):
    for rec in data["results"]:
        if (rec["workload"] == spec["workload"] and rec["impl"] == spec["impl"]
                and rec["shape"] == list(spec["shape"]) and "median_s" in rec):
            if rec["workload"] == "layer" and rec["mode"] == spec["mode"]:
                rec["peak_mem_bytes"] = mem.get(spec["mode"])
            elif rec["workload"] == "onm":
                if rec["mode"] == "forward+backward":
                    vals = [v for v in mem.values() if v is not None]
                    rec["peak_mem_bytes"] = max(vals) if vals else None
                else:
                    rec["peak_mem_bytes"] = mem.get(rec["mode"])


def _cpu_memory_pass(data, cfg, specs, progress_enabled):
    """The CPU memory measurements, in one worker process started with MALLOC_ENV (see common.py)."""
    if not specs:
        return
    if not common.cpu_peak_rss_supported():
        data["notes"].append("peak RSS not measured: /proc/self/clear_refs is not writable here")
        return
    worker = Worker("memory", cfg["threads"], common.MALLOC_ENV)
    progress = _Progress(progress_enabled, "memory")
    progress.expect(len(specs))
    try:
        for spec in specs:
            label = f"{spec['impl']} {common.shape_str(spec['shape'])} {spec['mode']}"
            try:
                case = RemoteCase(worker, spec)
                for _ in range(impls_mod.IMPLS[spec["impl"]].memory_warmup):
                    case.run()
                _attach_memory(data, spec, case.run_memory())
                case.free()
            except WorkerError as exc:
                progress.write(f"  memory of {label} failed: {exc}")
                if not worker.alive():
                    worker = Worker("memory", cfg["threads"], common.MALLOC_ENV)
            progress.step(label)
    finally:
        progress.close()
        worker.close()


def run_suite(cfg):
    device = cfg["device"]
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    common.quiet_peer_logging()
    chosen = impls_mod.select(cfg["impls"])
    availability = {i.key: i.unavailable(device) for i in chosen}
    machine = common.machine_info(device)
    data = dict(
        schema=common.SCHEMA,
        kind=cfg.get("stem", "bench"),
        machine=machine,
        config={k: v for k, v in cfg.items() if k not in ("out",)},
        notes=[PEER_NOTE, _repeats_note(cfg)],
        impls={i.key: dict(label=i.label, version=i.version(), equation=i.equation, time_major=i.time_major,
                           available=availability[i.key] is None, reason=availability[i.key]) for i in chosen},
        results=[],
        checks=[],
        bandwidth=[],
    )
    if "onm" in cfg["workloads"]:
        data["notes"].append(
            f"onm: Linear(n,n) + LIF, B={cfg['batch']}, T={cfg['steps']}, loss = output.sum(); forward "
            "(with autograd recording) and backward timed separately in each sample; the Linear layer's "
            "time is included for every implementation.")
    out = cfg["out"] or common.results_path(cfg.get("stem", "bench"), device)
    print_setup(machine, availability, data["notes"], PEER_NOTE)

    progress = _Progress(cfg["progress"], "bench")
    rates, mem_specs = {}, []
    try:
        for workload in cfg["workloads"]:
            if workload == "layer":
                points = [(shape, mode) for shape in cfg["shapes"] for mode in LAYER_MODES]
            else:
                points = [((cfg["batch"], cfg["steps"], n), "train") for n in cfg["neurons"]]
            for shape, mode in points:
                run_point(data, cfg, workload, shape, mode, chosen, availability, rates, progress, mem_specs)
                common.write_json(out, data)  # partial results survive an interrupted run
    finally:
        progress.close()
    if cfg["memory"] and torch.device(device).type == "cpu":
        print(f"peak memory: {len(mem_specs)} measurements in a worker process ...", flush=True)
        _cpu_memory_pass(data, cfg, mem_specs, cfg["progress"])
    data["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    common.write_json(out, data)
    data["path"] = out
    return data


def print_setup(machine, availability, notes, peer_note=None):
    """Prints the machine and which implementations run; warns (and notes) when the machine is busy."""
    print(f"device: {common.describe_machine(machine)}")
    for key, why in availability.items():
        print(f"  {impls_mod.IMPLS[key].label:28s} " + ("ok" if why is None else f"skipped: {why}"))
    if peer_note:
        print(peer_note)
    load = machine.get("load_average_at_start")
    if load and load[0] > 0.75 * machine["cpus_usable"]:
        msg = (f"warning: the machine is busy (1-min load average {load[0]:.1f} on {machine['cpus_usable']} CPUs): "
               "timings will be noisy, the fast ones most (a parallel region waits for a descheduled thread)")
        print(msg)
        notes.append(msg)


def _repeats_note(cfg):
    return (
        f"time: median of {cfg['repeats']} timed calls per point after warm-up (fast implementations "
        f"keep sampling, up to {cfg['max_repeats']} calls or {cfg['budget_s']:g} s); implementations whose "
        f"warm-up call took over {cfg['slow_call_s']:g} s get {min(cfg['slow_repeats'], cfg['repeats'])}; "
        "all implementations of a point are interleaved, round by round, in rotating order.")


def _show(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(argv=None):
    args = build_parser(prog="python -m bench").parse_args(argv)
    cfg = config_from_args(args)
    data = run_suite(cfg)
    from bench.report import markdown

    print()
    print(markdown(data))
    print(f"results: {_show(data['path'])}")
    print(f"plots:   python bench/plot.py {_show(data['path'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
