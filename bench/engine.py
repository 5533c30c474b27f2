"""The one timing engine of bench/: every suite hands it points, it times them and writes the JSON.

A suite (bench/suites/) yields Points: what the point is (`where`: shape, pass, ...) and one case
spec per implementation. The engine builds the cases, in a worker process each (suite.ISOLATE,
see worker.py) or in this process, and times them **interleaved**: round by round, the order
rotated every round, so that a change in machine load hits every implementation alike. A case's
`run()` returns {phase: seconds} for one sample. Records hold the median, quartiles and every
sample; ratios are taken between medians of the same run. The JSON also holds the machine, the
load average at start and end, the configuration and the targets (targets.py) met or missed.

Repeats: after `warmup` untimed calls a case gets at least `repeats` samples, or `slow_repeats`
when its warm-up call took over `slow_call_s`; fast cases keep sampling up to `max_repeats` while
they have spent less than `budget_s`. A case whose warm-up call took over `max_call_s` is timed by
that call alone (`warmup_only`), and is skipped at larger points where a power law through its
earlier points (in `Point.size`) projects more than `max_call_s`.

In a round, a fast case (a call under FAST_S) first runs untimed for REWARM_S, since the first
calls on a core that sat idle are slow, then makes a burst of up to BURST timed calls back to back
(about 0.1 s worth); a slow one makes one timed call.
"""
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
import traceback

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "bench", "results")
SCHEMA = "lif_cuda-bench/2"

FAST_S = 0.2
REWARM_S = 0.02
BURST = 5
TIMING = ("repeats", "max_repeats", "budget_s", "slow_call_s", "slow_repeats", "max_call_s")


# ------------------------------------------------------------------------------------- clocks
def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """Runs fn() once between two device synchronisations; returns (seconds, fn's result)."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def summarize(samples):
    """Median and spread of a list of seconds (None when there are none)."""
    if not samples:
        return None
    s = sorted(samples)
    q = statistics.quantiles(s, n=4, method="inclusive") if len(s) >= 2 else [s[0], s[0], s[0]]
    return {"median_s": statistics.median(s), "min_s": s[0], "max_s": s[-1], "p25_s": q[0], "p75_s": q[2],
            "n": len(s)}


class CallCase:
    """An in-process case made of plain callables, {phase: fn}. A sample is one call between two
    device synchronisations or, with calls > 1 (calls of microseconds), the mean of a block of
    calls timed by torch.utils.benchmark."""

    def __init__(self, fns, device="cpu", calls=1):
        self.fns, self.device, self.calls = fns, torch.device(device), calls
        self.phases = tuple(fns)
        self.timers = None
        if calls > 1:
            from torch.utils.benchmark import Timer

            # Timer runs on one thread unless told otherwise; the benchmark wants torch's default.
            self.timers = {p: Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
                           for p, fn in fns.items()}

    def run(self):
        if self.timers:
            return {p: t.timeit(self.calls).mean for p, t in self.timers.items()}
        return {p: timed(fn, self.device)[0] for p, fn in self.fns.items()}

    def run_memory(self):
        from bench.memory import PeakMemory

        out = {}
        for p, fn in self.fns.items():
            with PeakMemory(self.device) as pm:
                fn()
            out[p] = pm.peak_bytes
        return out

    def free(self):
        self.fns = self.timers = None


# ------------------------------------------------------------------------------------- points
@dataclasses.dataclass
class Point:
    """One point of a suite: every case in it is timed in the same interleaved rounds."""

    where: dict  # what the point is (shape, pass, workload, ...): copied into each of its records
    cases: dict  # implementation key -> spec, from which suite.build() (or a worker) makes the case
    warmup: dict = dataclasses.field(default_factory=dict)  # key -> untimed calls (default 1)
    skipped: dict = dataclasses.field(default_factory=dict)  # key -> why it does not run here
    size: float = None  # for projecting slow implementations' time (max_call_s); None: no projection
    timing: dict = dataclasses.field(default_factory=dict)  # overrides of the configuration's TIMING
    burst: bool = True  # False: one call per round, none untimed (each call changes the case: training)

    @property
    def label(self):
        return " ".join(f"{v}" if not isinstance(v, (list, tuple)) else "x".join(map(str, v))
                        for v in self.where.values())


class Slot:
    def __init__(self, key, case, warmup):
        self.key, self.case, self.warmup = key, case, warmup
        self.burst = True
        self.warmup_s, self.warmup_phases = [], []
        self.warmup_only = False
        self.samples = {p: [] for p in case.phases}
        self.spent, self.min_repeats, self.error, self.last_s = 0.0, 0, None, None

    @property
    def count(self):
        return min(len(v) for v in self.samples.values()) if self.samples else 0


class Progress:
    """tqdm when available and wanted, else plain lines for what must be said."""

    def __init__(self, enabled, desc):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=0, desc=desc, unit="call", dynamic_ncols=True, leave=False)
            except ImportError:
                pass

    def expect(self, n):
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def step(self, label):
        if self.bar is not None:
            self.bar.total = max(self.bar.total, self.bar.n + 1)
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(1)

    def write(self, text):
        (self.bar.write if self.bar is not None else lambda t: print(t, flush=True))(text)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fail(slot, exc):
    slot.error = _one_line(exc)
    slot.trace = traceback.format_exc()


def _burst(slot, max_repeats):
    """Timed samples for one round: a list of {phase: seconds} (empty on failure)."""
    fast = slot.burst and slot.last_s is not None and slot.last_s < FAST_S
    n = max(1, min(BURST, int(0.1 / max(slot.last_s, 1e-6)))) if fast else 1
    n = max(1, min(n, max_repeats - slot.count))
    try:
        if hasattr(slot.case, "run_burst"):
            return slot.case.run_burst(n, REWARM_S if fast else 0.0)
        if fast:  # wake the core up: a call after idleness is slow
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < REWARM_S:
                slot.case.run()
        return [slot.case.run() for _ in range(n)]
    except Exception as exc:  # a peer that breaks on this shape/device must not end the run
        _fail(slot, exc)
        return []


def run_interleaved(slots, *, repeats, max_repeats, budget_s, slow_call_s, slow_repeats, max_call_s=0,
                    progress, label=""):
    """Fills each slot's samples. Slots that fail get `.error` and drop out of later rounds."""
    progress.expect(sum(s.warmup + repeats for s in slots))
    for slot in slots:
        for _ in range(slot.warmup):
            try:
                ph = slot.case.run()
            except Exception as exc:
                _fail(slot, exc)
                break
            progress.step(f"{label} {slot.key} warm-up")
            slot.warmup_s.append(sum(ph.values()))
            slot.warmup_phases.append(ph)
            slot.last_s = slot.warmup_s[-1]
        if slot.error:
            continue
        if max_call_s and slot.warmup_s and slot.warmup_s[-1] > max_call_s:
            slot.warmup_only = True  # one more call is not worth its time: the warm-up is the sample
            for p, v in slot.warmup_phases[-1].items():
                slot.samples[p].append(v)
            progress.expect(-repeats)
            continue
        slow = slot.warmup_s and slot.warmup_s[-1] > slow_call_s
        slot.min_repeats = min(slow_repeats, repeats) if slow else repeats
        progress.expect(slot.min_repeats - repeats)

    def needs(s):
        if s.error or s.warmup_only:
            return False
        return s.count < s.min_repeats or (s.count < max_repeats and s.spent < budget_s)

    rnd = 0
    while True:
        active = [s for s in slots if needs(s)]
        if not active:
            return slots
        k = rnd % len(active)
        for slot in active[k:] + active[:k]:
            for ph in _burst(slot, max_repeats):
                progress.step(f"{label} {slot.key}")
                for p, v in ph.items():
                    slot.samples[p].append(v)
                slot.spent += sum(ph.values())
                slot.last_s = sum(ph.values())
        rnd += 1


def _project(history, size):
    """Expected seconds per call at `size` from (size, seconds) of the points already run, or None
    where it ran at a size at least as large: a power law through the two largest points (exponent
    clamped to [1, 3]) when they are far enough apart, else linear."""
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


# ---------------------------------------------------------------------------------------- runs
def run(suite, cfg):
    """Runs `suite` (a module of bench/suites) with configuration `cfg`; returns the result dict,
    written to cfg["out"] (or bench/results/<suite>-<device>-<date>.json) after every point."""
    from bench.worker import Workers

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    quiet_peer_logging()
    device = cfg["device"]
    cfg["impls_info"] = suite.describe(cfg)
    data = dict(schema=SCHEMA, suite=suite.NAME, machine=machine_info(device),
                config={k: v for k, v in cfg.items() if k not in ("out", "impls_info")},
                notes=list(getattr(suite, "NOTES", ())), impls=cfg["impls_info"], results=[], checks=[])
    out = cfg.get("out") or results_path(suite.NAME, device)
    _print_setup(suite, data)
    progress = Progress(cfg.get("progress", True), suite.NAME)
    state = dict(rates={}, mem_specs=[])
    shared = Workers(cfg.get("threads")) if suite.ISOLATE and cfg.get("reuse_workers") else None
    try:
        for point in suite.points(cfg):
            # A fresh process per implementation and point (unless shared): what it finds in its heap
            # is what its own calls left there, as in a user's program.
            workers = shared or (Workers(cfg.get("threads")) if suite.ISOLATE else None)
            try:
                _run_point(suite, cfg, data, point, workers, progress, state)
            finally:
                if workers is not None and workers is not shared:
                    workers.close()
            gc.collect()
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            write_json(out, data)  # partial results survive an interrupted run
    finally:
        progress.close()
        if shared:
            shared.close()
    if state["mem_specs"]:
        from bench.memory import cpu_memory_pass

        print(f"peak memory: {len(state['mem_specs'])} measurements in a worker process ...", flush=True)
        cpu_memory_pass(data, state["mem_specs"], cfg)
    data["machine"]["load_average_at_end"] = _load_average()
    if hasattr(suite, "finish"):
        suite.finish(data, cfg)
    from bench import targets

    data["targets"] = targets.evaluate(data)
    write_json(out, data)
    data["path"] = out
    return data


def _print_setup(suite, data):
    """The machine, which implementations run, and a warning (kept in the notes) when it is busy."""
    m = data["machine"]
    print(f"{suite.NAME}: {describe_machine(m)}")
    for key, info in data["impls"].items():
        state = "ok" if info.get("available", True) else f"skipped: {info.get('reason')}"
        print(f"  {info.get('label', key):34s} {state}")
    load = m["load_average_at_start"]
    if load and load[0] > 0.75 * m["cpus_usable"]:
        note = (f"the machine was busy (1-min load average {load[0]:.1f} on {m['cpus_usable']} CPUs): "
                "timings are noisy, the fast ones most")
        print("warning: " + note)
        data["notes"].append(note)


def _one_line(exc):
    return (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:300]


def _run_point(suite, cfg, data, point, workers, progress, state):
    from bench.worker import RemoteCase

    timing = {k: cfg[k] for k in TIMING}
    timing.update(point.timing)
    timing["max_repeats"] = max(timing["max_repeats"], timing["repeats"])
    for key, why in point.skipped.items():
        data["results"].append(dict(point.where, impl=key, skipped=why))
    todo = {}
    for key, spec in point.cases.items():
        hist = state["rates"].get((key, point.where.get("phase")))
        projected = _project(hist, point.size) if timing["max_call_s"] and hist and point.size else None
        if projected and projected > timing["max_call_s"]:
            why = f"projected {projected:.0f} s per call > --max-call-s {timing['max_call_s']:g}"
            data["results"].append(dict(point.where, impl=key, skipped=why))
        else:
            todo[key] = spec
    if workers:
        for key in todo:
            workers.get(key)  # start them all now: they import their libraries concurrently
    slots = []
    for key, spec in todo.items():
        try:
            case = RemoteCase(workers.get(key), spec) if workers else suite.build(spec)
        except Exception as exc:  # a peer that cannot run this point must not end the run
            data["results"].append(dict(point.where, impl=key, error=_one_line(exc)))
            progress.write(f"  {key} at {point.label} failed to build: {_one_line(exc)}")
            continue
        slot = Slot(key, case, point.warmup.get(key, 1))
        slot.spec, slot.burst = spec, point.burst
        slots.append(slot)
    run_interleaved(slots, progress=progress, label=point.label, **timing)
    for slot in slots:
        _record(data, point, slot, timing, cfg, state, progress, workers)
    if hasattr(suite, "after_point"):
        try:
            suite.after_point(data, point, [s for s in slots if not s.error], cfg)
        except Exception as exc:
            data["checks"].append(dict(point.where, error=_one_line(exc)))
            progress.write(f"  checks at {point.label} failed: {_one_line(exc)}")
    for slot in slots:
        slot.case.free()
        slot.case = None


def _record(data, point, slot, timing, cfg, state, progress, workers):
    if slot.error:
        data["results"].append(dict(point.where, impl=slot.key, error=slot.error))
        progress.write(f"  {slot.key} at {point.label} failed: {slot.error}")
        return
    phases = dict(slot.samples)
    if set(phases) == {"forward", "backward"}:  # timed separately in each sample: also their sum
        phases["forward+backward"] = [f + b for f, b in zip(phases["forward"], phases["backward"])]
    for phase, samples in phases.items():
        rec = dict(point.where, impl=slot.key, phase=phase, **summarize(samples), samples_s=samples,
                   warmup_s=slot.warmup_s)
        if slot.min_repeats < timing["repeats"] or slot.warmup_only:
            rec["reduced_repeats"] = True
        if slot.warmup_only:
            rec["warmup_only"] = True
        data["results"].append(rec)
    total = sum(statistics.median(v) for v in slot.samples.values())
    if point.size:
        state["rates"].setdefault((slot.key, point.where.get("phase")), []).append((point.size, total))
    if not cfg.get("memory") or slot.warmup_only or slot.key not in cfg["impls_info"]:  # not the baselines
        return
    if torch.device(cfg["device"]).type == "cuda":
        try:
            attach_memory(data, point.where, slot.key, slot.case.run_memory())
        except Exception as exc:
            progress.write(f"  memory of {slot.key} at {point.label} failed: {_one_line(exc)}")
    elif workers is not None:  # CPU peak RSS: later, in a worker of its own (memory.py says why)
        state["mem_specs"].append((point.where, slot.key, slot.spec, point.warmup.get(slot.key, 1)))


def attach_memory(data, where, key, peaks):
    """Puts {phase: peak bytes} on the records of `key` at the point `where`."""
    for rec in data["results"]:
        if rec.get("impl") == key and "median_s" in rec and all(rec.get(k) == v for k, v in where.items()):
            vals = [v for v in peaks.values() if v is not None]
            rec["peak_mem_bytes"] = peaks.get(rec["phase"], max(vals) if vals else None)


# ------------------------------------------------------------------------------- machine facts
def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def package_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


ENV_RECORDED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE", "LIF_OUTPUT_POOL_MB",
                "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD",
                "SJ_LIF_CUDA_IMPLEMENTATION", "CUDA_VISIBLE_DEVICES")


def machine_info(device):
    """What a reader needs to judge the numbers: CPU/GPU, cores, load, versions, commit, date."""
    import lif_cuda

    dev = torch.device(device)
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    mem = re.search(r"^MemTotal:\s+(\d+)\s+kB", _read("/proc/meminfo"), re.M)
    thp = re.search(r"\[(\w+)\]", _read("/sys/kernel/mm/transparent_hugepage/enabled"))
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": model.group(1).strip() if model else (platform.processor() or "unknown"),
        "cpu_isa": [f for f in ("avx512f", "avx2", "fma") if f in flags],
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lif_cuda": getattr(lif_cuda, "__version__", None),
        "lif_cuda_extension_loaded": lif_cuda.extension_loaded(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", ".", ":!bench/results")),
        "device": str(dev),
        "load_average_at_start": _load_average(),
        "transparent_hugepage": thp.group(1) if thp else None,
        "environment": {k: os.environ[k] for k in ENV_RECORDED if k in os.environ},
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(gpu_model=torch.cuda.get_device_name(dev), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_sms=props.multi_processor_count, gpu_capability=f"{props.major}.{props.minor}",
                    cuda_runtime=torch.version.cuda)
    return info


def describe_machine(info):
    """One line naming the machine, for captions."""
    isa = f" ({info['cpu_isa'][0]})" if info.get("cpu_isa") else ""
    s = f"{info['cpu_model']}{isa}, {info['cpus_usable']} CPUs usable, torch {info['torch']}"
    s += f" ({info['torch_threads']} threads)"
    if info.get("gpu_model"):
        s = f"{info['gpu_model']} ({info['gpu_memory_gib']} GiB); host " + s
    return s


def quiet_peer_logging():
    """Silences what peers print on import (SpikingJelly's loguru, torch's Triton notice)."""
    import logging
    import sys
    import warnings

    for category in (UserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    try:
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    except Exception:
        pass


# --------------------------------------------------------------------------------------- files
def results_path(stem, device, out_dir=None):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    d = out_dir or RESULTS_DIR
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, f"{stem}-{torch.device(device).type}-{stamp}.json")


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({k: v for k, v in obj.items() if k != "path"}, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path):
    with open(path) as f:
        data = json.load(f)
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a result of this harness (schema {data.get('schema')!r}; files of the "
                         "previous scripts are read as plain JSON)")
    return data
