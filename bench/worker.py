"""Each implementation runs, at each point, in a fresh process of its own; the engine starts them,
feeds them calls round by round, and ends them when the point is done.

Why: glibc serves a large allocation from free space already in the process's heap, and only
maps (and page-faults in) fresh memory when there is none. Run in one process, an implementation
that follows a memory-hungry one (a Python time loop with autograd) finds a large free heap and
gets its big outputs without page faults: its time then depends on its neighbours. In a process of
its own, each implementation sees the heap it makes itself, as in a user's training loop.

Protocol: `python -m bench.worker [--threads N]` reads one JSON command per line on stdin and
answers one JSON line on its stdout (anything else the libraries print goes to stderr):
  {"op": "build", "spec": {...}}   build the case: bench.suites.SUITES[spec["suite"]].build(spec)
                                                                       -> {"phases": [...]}
  {"op": "run", "n": k, "rewarm_s": r}
                                   untimed calls for r seconds (at least one when r > 0), then k
                                   timed calls back to back        -> {"samples": [{name: s}, ...]}
  {"op": "memory"}                 one call under PeakMemory           -> {"peak_bytes": {name: B}}
  {"op": "spikes", "path": P}      torch.save the (B,T,N) spikes to P  -> {}
  {"op": "report"}                 what the case has to say (training cases) -> {"report": {...}}
  {"op": "free"}                   drop the case                       -> {}
  {"op": "exit"}
Errors come back as {"error": "..."}; the worker stays usable.
"""
import gc
import json
import os
import subprocess
import sys
import time
import traceback

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from bench.engine import REPO, quiet_peer_logging  # noqa: E402

# A pause before each request, so that the OpenMP threads of the process that ran last have stopped
# spin-waiting before the next process starts: libgomp's threads spin GOMP_SPINCOUNT (300,000)
# times after a parallel region (~5-15 ms), and a busy-waiting thread of an idle worker would take a
# core from the one being timed.
GAP_S = 0.02


def build_case(spec):
    from bench.suites import SUITES

    return SUITES[spec["suite"]].build(spec)


def serve(argv):
    threads = None
    if "--threads" in argv:
        threads = int(argv[argv.index("--threads") + 1])
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # the libraries' prints go to stderr; stdout is for answers only
    sys.stdout = sys.stderr
    replies = os.fdopen(reply_fd, "w", buffering=1)

    import torch

    if threads:
        torch.set_num_threads(threads)
    quiet_peer_logging()
    case = None
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        op = cmd.get("op")
        if op == "exit":
            break
        try:
            if op == "build":
                case = None
                gc.collect()
                case = build_case(cmd["spec"])
                out = {"phases": list(case.phases)}
            elif op == "run":
                rewarm_s = float(cmd.get("rewarm_s", 0.0))
                if rewarm_s > 0:  # a core that was idle runs the next call slowly: warm it first
                    t0 = time.perf_counter()
                    case.run()
                    while time.perf_counter() - t0 < rewarm_s:
                        case.run()
                out = {"samples": [case.run() for _ in range(int(cmd.get("n", 1)))]}
            elif op == "memory":
                out = {"peak_bytes": case.run_memory()}
            elif op == "spikes":
                torch.save(case.spikes_btn().float().cpu().contiguous(), cmd["path"])
                out = {}
            elif op == "report":
                out = {"report": case.report()}
            elif op == "free":
                case = None
                gc.collect()
                out = {}
            else:
                out = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # report, stay alive
            out = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                   "trace": traceback.format_exc()[-2000:]}
        replies.write(json.dumps(out) + "\n")
    return 0


class WorkerError(RuntimeError):
    pass


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, name, threads=None, env_extra=None):
        self.name = name
        cmd = [sys.executable, "-m", "bench.worker"]
        if threads:
            cmd += ["--threads", str(threads)]
        env = dict(os.environ, **(env_extra or {}))
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def alive(self):
        return self.proc.poll() is None

    def request(self, **cmd):
        if not self.alive():
            raise WorkerError(f"worker {self.name} has exited (code {self.proc.returncode})")
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"worker {self.name} is gone: {exc}") from exc
        if not line:
            code = self.proc.wait()
            raise WorkerError(f"worker {self.name} died (exit code {code}; killed for memory?)")
        out = json.loads(line)
        if "error" in out:
            raise WorkerError(out["error"])
        return out

    def close(self):
        if self.alive():
            try:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Workers:
    """One worker per implementation, started on first use, restarted if it died."""

    def __init__(self, threads=None, env_extra=None):
        self.threads, self.env_extra, self.by_key = threads, env_extra, {}

    def get(self, key):
        w = self.by_key.get(key)
        if w is None or not w.alive():
            w = self.by_key[key] = Worker(key, self.threads, self.env_extra)
        return w

    def close(self):
        for w in self.by_key.values():
            w.close()
        self.by_key.clear()


class RemoteCase:
    """A case living in a worker; the engine uses it like a local one."""

    def __init__(self, worker, spec):
        self.worker, self.spec = worker, spec
        out = worker.request(op="build", spec=spec)
        self.phases = tuple(out["phases"])

    def run(self):
        time.sleep(GAP_S)
        return self.worker.request(op="run", n=1)["samples"][0]

    def run_burst(self, n, rewarm_s):
        time.sleep(GAP_S)
        return self.worker.request(op="run", n=n, rewarm_s=rewarm_s)["samples"]

    def run_memory(self):
        return self.worker.request(op="memory")["peak_bytes"]

    def spikes_btn(self):
        import tempfile

        import torch

        path = os.path.join(tempfile.gettempdir(), f"lif_bench_spikes_{os.getpid()}.pt")
        self.worker.request(op="spikes", path=path)
        try:
            return torch.load(path)
        finally:
            os.remove(path)

    def report(self):
        return self.worker.request(op="report")["report"]

    def free(self):
        try:
            self.worker.request(op="free")
        except WorkerError:
            pass


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
