"""Markdown from a result: the machine and load, median times per point and implementation, ratios
against the suite's base implementation, the suite's own tables, and the targets met or missed."""
from bench.engine import describe_machine

# Fields of a record that hold a measured value other than a time, or how it was derived: never part
# of what names the record's point.
VALUE_KEYS = ("value", "kept_bytes", "fit_points", "intercept_bytes", "bytes_per_step", "budget_gib")


def fmt_time(seconds):
    if seconds is None:
        return "—"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _fmt(v):
    return "x".join(map(str, v)) if isinstance(v, list) else str(v)


def rows(data):
    """{row label: {impl: record}} in the order of the run; a row is a point and a pass."""
    skip = {"impl", "phase", "n", "error", "skipped", "reduced_repeats", "warmup_only", "peak_mem_bytes", *VALUE_KEYS}
    out = {}
    for r in data["results"]:
        label = " ".join(_fmt(v) for k, v in r.items() if k not in skip and not k.endswith("_s")
                         and not isinstance(v, (dict, float)))
        label += f" {r['phase']}" if "phase" in r else ""
        out.setdefault(label, {})[r["impl"]] = r
    return out


def _cell(r):
    if r is None:
        return ""
    if r.get("value") is not None:  # a measured quantity that is not a time (e.g. bytes kept)
        return f"{r['value']:.4g}"
    if "median_s" not in r:
        return "skip" if "skipped" in r else "error"
    spread = (r["p75_s"] - r["p25_s"]) / 2 / r["median_s"] * 100 if r["median_s"] else 0
    mark = " (1 call)" if r.get("warmup_only") else " (fewer)" if r.get("reduced_repeats") else ""
    return f"{fmt_time(r['median_s'])} ±{spread:.0f}%{mark}"


def _table(head, body):
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(r) + " |" for r in body])


def markdown(data):
    from bench.suites import SUITES

    suite = SUITES[data["suite"]]
    m = data["machine"]
    load = [m.get("load_average_at_start"), m.get("load_average_at_end")]
    out = [f"## {data['suite']} — {describe_machine(m)}", "",
           f"{m['date']}, commit {str(m.get('git_commit'))[:10]}{' (dirty)' if m.get('git_dirty') else ''}, "
           f"device {m['device']}, 1-min load average " + " -> ".join(f"{v[0]:.2f}" if v else "?" for v in load) + "."]
    out += [f"- {n}" for n in data.get("notes", [])]
    gone = {k: v.get("reason") for k, v in data["impls"].items() if not v.get("available", True)}
    out += [f"- not run: {k} ({why})" for k, why in gone.items()]
    table = rows(data)
    impls = [k for k in data["impls"] if any(k in cells for cells in table.values())]
    out += ["", "Median time per call (± half the inter-quartile range), implementations interleaved:", "",
            _table(["point", *impls], [[label, *(_cell(cells.get(k)) for k in impls)]
                                       for label, cells in table.items()])]
    base = suite.BASE
    others = [k for k in impls if k != base]
    if base in impls and others:
        body = []
        for label, cells in table.items():
            b = cells.get(base, {}).get("median_s")
            body.append([label, *(f"{cells[k]['median_s'] / b:.2f}×" if b and cells.get(k, {}).get("median_s") else ""
                                  for k in others)])
        out += ["", f"Time of each / time of {base} (same run):", "", _table(["point", *others], body)]
    if any("peak_mem_bytes" in r for r in data["results"]):
        body = [[label, *(f"{max(cells[k]['peak_mem_bytes'], 0) / 2**20:.1f}" if cells.get(k, {}).get("peak_mem_bytes")
                          is not None else "" for k in impls)] for label, cells in table.items()]
        out += ["", "Peak memory above inputs and parameters (MiB):", "", _table(["point", *impls], body)]
    checks = [c for c in data.get("checks", []) if ("spikes_equal" in c or "error" in c)
              and c.get("impl") != c.get("compared_with")]
    if checks:
        differ = [c for c in checks if not c.get("spikes_equal")]
        said = [f"; {c['impl']} at {_fmt(c.get('shape') or c.get('workload'))}: "
                + (c.get("error") or f"DIFFER ({100 * c.get('agreement', 0):.2f}% agree)") for c in differ]
        out += ["", f"Spikes checked against {checks[0].get('compared_with')}: {len(checks) - len(differ)} of "
                f"{len(checks)} equal" + "".join(said)]
    if hasattr(suite, "summary"):
        text = suite.summary(data)
        out += ["", text] if text else []
    if not data.get("targets"):
        out += ["", f"Targets: none for {data['suite']} on {m['device']} in bench/targets.py."]
    else:
        out += ["", "Targets (bench/targets.py):"]
        for t in data["targets"]:
            goal = f">= {t['at_least']:g}" if t["at_least"] is not None else f"<= {t['at_most']:g}"
            if t["met"] is None:
                out.append(f"- {t['target']}: not measured")
            else:
                where = ", ".join(f"{k} {_fmt(list(v) if isinstance(v, tuple) else v)}" for k, v in t["where"].items())
                out.append(f"- {t['target']}: {t['value']:.3g} ({goal}) at {where}: "
                           + ("met" if t["met"] else "MISSED"))
    return "\n".join(out)
