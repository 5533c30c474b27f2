"""Interleaved timing: every implementation of one point (shape, mode) is measured in rounds, the
order rotated from round to round, so that a change in machine load hits all of them alike rather
than whichever happened to run then. Each implementation runs in its own worker process
(worker.py). In a round, a fast implementation (a call under FAST_S) first runs untimed for
REWARM_S, since the first calls on a core that sat idle are slow (measured: 1.7 ms instead of
0.35 ms after 50 ms idle), then makes a burst of up to BURST timed calls back to back (about 0.1 s
worth); a slow one makes one timed call.

Repeats: after `warmup` untimed calls, each case gets at least `repeats` samples; a case whose
warm-up call took longer than `slow_call_s` gets `slow_repeats` instead (stated in the results);
fast cases go on sampling, up to `max_repeats`, while they have spent less than `budget_s`.
A case whose warm-up call took longer than `over_cap_s` (when set) is not called again: its
warm-up call is its only sample, flagged `warmup_only` in the results.
"""
import traceback

FAST_S = 0.2  # calls shorter than this are re-warmed and timed in bursts
REWARM_S = 0.02
BURST = 5


class Slot:
    def __init__(self, key, case, warmup):
        self.key = key
        self.case = case
        self.warmup = warmup
        self.warmup_s = []
        self.warmup_phases = []
        self.warmup_only = False
        self.samples = {p: [] for p in case.phases}
        self.spent = 0.0
        self.min_repeats = 0
        self.error = None
        self.last_s = None

    @property
    def count(self):
        return min(len(v) for v in self.samples.values()) if self.samples else 0


class _Progress:
    """tqdm when available and wanted, else nothing."""

    def __init__(self, enabled, desc):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=0, desc=desc, unit="call", dynamic_ncols=True, leave=False)
            except ImportError:
                self.bar = None

    def expect(self, n):
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def step(self, label):
        if self.bar is not None:
            if self.bar.n + 1 > self.bar.total:
                self.bar.total = self.bar.n + 1
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(1)

    def write(self, text):
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fail(slot, exc):
    slot.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    slot.trace = traceback.format_exc()


def _call(slot):
    try:
        return slot.case.run()
    except Exception as exc:  # a peer that breaks on this shape/device must not end the run
        _fail(slot, exc)
        return None


def _burst(slot, max_repeats):
    """Timed samples for one round: a list of {phase: seconds} (empty on failure)."""
    fast = slot.last_s is not None and slot.last_s < FAST_S
    n = max(1, min(BURST, int(0.1 / max(slot.last_s, 1e-6)))) if fast else 1
    n = max(1, min(n, max_repeats - slot.count))
    try:
        if hasattr(slot.case, "run_burst"):
            return slot.case.run_burst(n, REWARM_S if fast else 0.0)
        return [slot.case.run() for _ in range(n)]
    except Exception as exc:
        _fail(slot, exc)
        return []


def run_interleaved(slots, *, repeats, max_repeats, budget_s, slow_call_s, slow_repeats, progress, label="",
                    over_cap_s=None):
    """Fills each slot's samples. Slots that fail get `.error` and are dropped from later rounds."""
    progress.expect(sum(s.warmup + repeats for s in slots))
    for slot in slots:
        for _ in range(slot.warmup):
            ph = _call(slot)
            progress.step(f"{label} {slot.key} warm-up")
            if ph is None:
                break
            slot.warmup_s.append(sum(ph.values()))
            slot.warmup_phases.append(ph)
            slot.last_s = slot.warmup_s[-1]
        if slot.error:
            continue
        if over_cap_s and slot.warmup_s and slot.warmup_s[-1] > over_cap_s:
            slot.warmup_only = True
            for p, v in slot.warmup_phases[-1].items():
                slot.samples[p].append(v)
            progress.expect(-repeats)
            continue
        slow = slot.warmup_s and slot.warmup_s[-1] > slow_call_s
        slot.min_repeats = min(slow_repeats, repeats) if slow else repeats
        if slot.min_repeats < repeats:
            progress.expect(slot.min_repeats - repeats)

    def needs(s):
        if s.error or s.warmup_only:
            return False
        if s.count < s.min_repeats:
            return True
        return s.count < max_repeats and s.spent < budget_s

    rnd = 0
    while True:
        active = [s for s in slots if needs(s)]
        if not active:
            break
        k = rnd % len(active)
        for slot in active[k:] + active[:k]:
            for ph in _burst(slot, max_repeats):
                progress.step(f"{label} {slot.key}")
                for p, v in ph.items():
                    slot.samples[p].append(v)
                slot.spent += sum(ph.values())
                slot.last_s = sum(ph.values())
        rnd += 1
    return slots
