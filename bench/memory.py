"""Peak memory of one call, above what existed before it (inputs and parameters not counted).

CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus what was
allocated before. CPU: the peak resident set (VmHWM, reset by writing "5" to /proc/self/clear_refs)
minus the resident set before. glibc keeps freed blocks below its (self-raising) mmap threshold
inside the process, where they would hide later allocations; so the CPU figures are taken after
the timing, each in a fresh worker process started with MALLOC_ENV, where every block of 4 KiB or more is
mapped when allocated and unmapped when freed (many small blocks kept across a step, such as a
chunked stack's (B, N) states, would otherwise reuse the heap the previous step freed and never
show). The timed runs keep glibc's defaults, as users have them.
"""
import gc
import re

import torch

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4096", "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_MMAP_MAX_": "1048576"}


def _status_bytes(field):
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) * 1024 if m else None


def _reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cpu_peak_rss_supported():
    try:
        _reset_hwm()
        return _status_bytes("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """`with PeakMemory(device) as pm: ...` -> pm.peak_bytes, the peak the block added."""

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
            _reset_hwm()
            self._base = _status_bytes("VmRSS")
        return self

    def reset_peak(self):
        """Starts a new peak, keeping the baseline (e.g. between forward and backward)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_hwm()

    def mark(self):
        """The peak so far, in bytes above the baseline."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self._base
        return _status_bytes("VmHWM") - self._base

    def __exit__(self, *exc):
        self.peak_bytes = self.mark()
        return False


def cpu_memory_pass(data, specs, cfg):
    """The CPU peak-memory figures of the timed cases, each in a fresh worker process started with
    MALLOC_ENV (in a worker that ran a larger case before, what that case freed but the process kept
    hid part of the next one's peak). `specs`: (where, key, spec, warm-up calls) of each case;
    warm-up only for what is done once (compiling)."""
    from bench.engine import attach_memory
    from bench.worker import RemoteCase, Worker, WorkerError

    if not cpu_peak_rss_supported():
        data["notes"].append("peak RSS not measured: /proc/self/clear_refs is not writable here")
        return
    for where, key, spec, warmup in specs:
        worker = Worker("memory", cfg.get("threads"), MALLOC_ENV)
        try:
            case = RemoteCase(worker, spec)
            for _ in range(warmup - 1):
                case.run()
            attach_memory(data, where, key, case.run_memory())
        except WorkerError as exc:
            print(f"  memory of {key} at {where} failed: {exc}", flush=True)
        finally:
            worker.close()
