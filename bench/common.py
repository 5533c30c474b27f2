"""What every benchmark script shares: clocks, peak memory, machine facts, JSON files.

Timing: one call of the measured function is one sample; on CUDA the device is synchronised before
the clock starts and before it stops. Samples are summarised by their median and spread (min, max,
25th and 75th percentile).

Peak memory:
  * CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus what was
    allocated before the call (the inputs and parameters are not counted).
  * CPU: the process's peak resident set (VmHWM in /proc/self/status), reset before the call by
    writing "5" to /proc/self/clear_refs, minus the resident set (VmRSS) just before the call.
    glibc keeps freed blocks below its mmap threshold for re-use (and raises that threshold as
    blocks are freed), which would hide allocations from the RSS; so the CPU measurements run in a
    separate worker process started with MALLOC_MMAP_THRESHOLD_=65536 (every block of 64 KiB or
    more is mapped on allocation and unmapped on free). The timed runs keep glibc's defaults, as a
    user's process has them. See worker.py and run.py (_cpu_memory_pass).
"""
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "bench", "results")

SCHEMA = "lif_cuda-bench/1"

# Environment of the CPU memory worker (see the module docstring).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


# ----------------------------------------------------------------------------------------- clocks
def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """Runs fn() once; returns (seconds, fn's result)."""
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
    if len(s) >= 2:
        q = statistics.quantiles(s, n=4, method="inclusive")
        p25, p75 = q[0], q[2]
    else:
        p25 = p75 = s[0]
    return {
        "median_s": statistics.median(s),
        "min_s": s[0],
        "max_s": s[-1],
        "p25_s": p25,
        "p75_s": p75,
        "n": len(s),
    }


# ----------------------------------------------------------------------------------- peak memory
def _proc_status_kib(field):
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) if m else None


def cpu_peak_rss_supported():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kib("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """Context manager: `.peak_bytes` is the peak memory the block added over what was there before.

    CPU: peak RSS delta (meaningful in the memory worker only, see the module docstring).
    CUDA: peak of torch's caching allocator (allocated bytes, not reserved).
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak_bytes = None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._base = _proc_status_kib("VmRSS") * 1024
        return self

    def reset_peak(self):
        """Starts a new peak, keeping the baseline (e.g. between forward and backward)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def mark(self):
        """Peak so far (bytes over the baseline); usable inside the block."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self._base
        return _proc_status_kib("VmHWM") * 1024 - self._base

    def __exit__(self, *exc):
        self.peak_bytes = self.mark()
        return False


# --------------------------------------------------------------------------------- machine facts
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else (platform.processor() or "unknown")


def _cpu_isa():
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^flags\s*:\s*(.+)$", f.read(), re.M)
    except OSError:
        return None
    flags = set(m.group(1).split()) if m else set()
    return [f for f in ("avx512f", "avx2", "fma", "sse4_1") if f in flags]


def _git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            m = re.search(r"^MemTotal:\s+(\d+)\s+kB", f.read(), re.M)
        return round(int(m.group(1)) / 2**20, 1) if m else None
    except OSError:
        return None


def package_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


ENV_RECORDED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "THP_MEM_ALLOC_ENABLE", "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX", "LD_PRELOAD", "SJ_LIF_CUDA_IMPLEMENTATION",
                "CUDA_VISIBLE_DEVICES")


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            m = re.search(r"\[(\w+)\]", f.read())
        return m.group(1) if m else None
    except OSError:
        return None


def machine_info(device):
    """The facts a reader needs to judge the numbers: CPU/GPU model, cores, versions, commit, date."""
    import lif_cuda

    dev = torch.device(device)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_isa": _cpu_isa(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": _mem_total_gib(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lif_cuda": getattr(lif_cuda, "__version__", None),
        "lif_cuda_extension_loaded": lif_cuda.extension_loaded(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", ".", ":!bench/results")),
        "device": str(dev),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "transparent_hugepage": _thp_mode(),
        "environment": {k: os.environ[k] for k in ENV_RECORDED if k in os.environ},
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(
            gpu_model=torch.cuda.get_device_name(dev),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda_runtime=torch.version.cuda,
        )
    return info


def describe_machine(info):
    """One line naming the machine, for table captions."""
    isa = f" ({info['cpu_isa'][0]})" if info.get("cpu_isa") else ""
    s = f"{info['cpu_model']}{isa}, {info['cpus_usable']} CPUs usable, torch {info['torch']}"
    s += f" ({info['torch_threads']} threads)"
    if info.get("gpu_model"):
        s = f"{info['gpu_model']} ({info['gpu_memory_gib']} GiB); host " + s
    return s


# ------------------------------------------------------------------------------------------ files
def results_path(stem, device, out_dir=None):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    d = out_dir or RESULTS_DIR
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, f"{stem}-{torch.device(device).type}-{stamp}.json")


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, torch.Size):
        return list(o)
    if isinstance(o, (torch.dtype, torch.device)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path):
    with open(path) as f:
        data = json.load(f)
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a lif_cuda benchmark result (schema {data.get('schema')!r})")
    return data


# --------------------------------------------------------------------------------- small helpers
def parse_shapes(text):
    """'1x1000x128,32x100x512' -> [(1,1000,128), (32,100,512)]."""
    shapes = []
    for part in text.split(","):
        part = part.strip().lower().replace("(", "").replace(")", "")
        if not part:
            continue
        dims = tuple(int(d) for d in re.split(r"[x* ]+", part) if d)
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"a shape must be BxTxN with positive sizes, got {part!r}")
        shapes.append(dims)
    return shapes


def parse_ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def fmt_time(seconds):
    if seconds is None:
        return "—"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def fmt_bytes(n):
    if n is None:
        return "—"
    mib = max(n, 0) / 2**20  # the CPU figure (RSS) is exact to ~1 MiB; tiny negatives are noise
    return f"{mib:.0f} MiB" if abs(mib) >= 10 else f"{mib:.1f} MiB"


def shape_str(shape):
    return "(" + ",".join(str(d) for d in shape) + ")"


def quiet_peer_logging():
    """Silence the chatter peers print on import (SpikingJelly's loguru, torch's Triton notice)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    try:
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    except Exception:
        pass
