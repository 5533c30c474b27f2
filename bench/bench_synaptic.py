"""The synaptic LIF (SPEC §7) against Rockpool's LIFTorch, side by side.

    python bench/bench_synaptic.py                 # both workloads, 5 interleaved rounds (~3-4 min on 2 cores)
    python bench/bench_synaptic.py --repeats 9     # more rounds
    python bench/bench_synaptic.py --device cuda   # on a GPU (adds Rockpool's LIFExodus where it installs)

Workloads (float32, input spikes with p = 0.05 of amplitude 2, loss = spikes.sum(), the input
requiring grad as a layer's input does in a network):
  recurrent     (B,T,N) = (16,200,256), one synapse per neuron, recurrent weights w_rec (256, 256)
  feedforward   (B,T,N) = (16,500,1024), two synapses per neuron (input (16,500,2048)), no recurrence
Implementations: `dropin` = lif_cuda.rockpool.LIFTorch (the fused op through Rockpool's API),
`native` = lif_cuda.SynapticLIF, `rockpool` = rockpool.nn.modules.LIFTorch, `exodus` =
rockpool's LIFExodus (CUDA only, feed-forward only: it refuses recurrent weights). Each call
starts from a reset state. All implementations of a point run interleaved, round by round; the
median is reported. The spikes of every implementation are checked equal to Rockpool's.
Targets (the issue): recurrent forward+backward >= 5x Rockpool, feed-forward >= 50x.
Writes JSON to bench/results/ and prints the Markdown table of the README.
"""
import argparse
import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

import torch  # noqa: E402

from bench import common  # noqa: E402

WORKLOADS = {
    "recurrent": dict(B=16, T=200, N=256, S=1, has_rec=True, target=5.0),
    "feedforward": dict(B=16, T=500, N=1024, S=2, has_rec=False, target=50.0),
}
MODES = ("forward", "forward+backward")


def build(impl, w, device):
    """A layer of the workload, with the same parameters for every implementation."""
    N, S = w["N"], w["S"]
    g = torch.Generator().manual_seed(0)
    kw = dict(tau_mem=5e-3 + 30e-3 * torch.rand(N, generator=g), tau_syn=2e-3 + 10e-3 * torch.rand(N, S, generator=g),
              threshold=0.5 + torch.rand(N, generator=g), bias=0.02 * torch.randn(N, generator=g))
    if w["has_rec"]:
        kw.update(has_rec=True, w_rec=0.05 * torch.randn(N, N * S, generator=g))
    if impl == "native":
        import lif_cuda

        return lif_cuda.SynapticLIF((N * S, N), backend="fused", **kw).to(device)
    if impl == "dropin":
        import lif_cuda.rockpool

        return lif_cuda.rockpool.LIFTorch((N * S, N), backend="fused", **kw).to(device)
    if impl == "rockpool":
        from rockpool.nn.modules import LIFTorch

        return LIFTorch((N * S, N), **kw).to(device)
    if impl == "exodus":
        if w["has_rec"]:
            raise RuntimeError("LIFExodus refuses recurrent weights")
        from rockpool.nn.modules import LIFExodus

        kw.pop("bias")
        return LIFExodus((N * S, N), **kw).to(device)
    raise ValueError(impl)


def call(layer, x, mode):
    layer.reset_state()
    if mode == "forward":
        with torch.no_grad():
            out = layer(x)
    else:
        xx = x.requires_grad_(True)
        out = layer(xx)
    out = out[0] if isinstance(out, tuple) else out
    if mode != "forward":
        out.sum().backward()
        x.grad = None
    return out.detach()


def available(impl, device):
    try:
        build(impl, dict(WORKLOADS["feedforward"], N=4, B=1, T=2), device)
        return True, None
    except Exception as exc:  # not installed, or not on this device
        return False, f"{type(exc).__name__}: {exc}"


def run(args):
    device = torch.device(args.device)
    impls = {}
    for k in args.impls.split(","):
        ok, why = available(k, device)
        impls[k] = {"available": ok, "skipped": why}
    info = common.machine_info(device)
    results = []
    for name, w in WORKLOADS.items():
        g = torch.Generator().manual_seed(1)
        x = ((torch.rand(w["B"], w["T"], w["N"] * w["S"], generator=g) < 0.05).float() * 2).to(device)
        layers = {k: build(k, w, device) for k, v in impls.items() if v["available"]}
        for mode in MODES:
            outs = {k: call(layer, x.clone(), mode) for k, layer in layers.items()}  # warm-up, and the check
            ref = outs.get("rockpool")
            same = {k: (bool(torch.equal(o.cpu(), ref.cpu())) if ref is not None else None) for k, o in outs.items()}
            samples = {k: [] for k in layers}
            for _ in range(args.repeats):
                for k, layer in layers.items():
                    xx = x.clone()
                    dt, _ = common.timed(lambda layer=layer, xx=xx, mode=mode: call(layer, xx, mode), device)
                    samples[k].append(dt)
                    if not args.no_progress:
                        print(f"  {name} {mode} {k}: {common.fmt_time(dt)}", file=sys.stderr, flush=True)
            for k in layers:
                results.append(dict(workload=name, shape=[w["B"], w["T"], w["N"]], synapses=w["S"],
                                    recurrent=w["has_rec"], mode=mode, impl=k, spikes_equal_rockpool=same[k],
                                    **common.summarize(samples[k])))
    info["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"machine": info, "impls": impls, "repeats": args.repeats, "results": results}


def table(data):
    recs = {(r["workload"], r["mode"], r["impl"]): r for r in data["results"]}
    impls = [k for k, v in data["impls"].items() if v["available"]]
    others = [k for k in impls if k != "rockpool"]
    head = ["workload (B,T,N) x S", "pass"] + impls + [f"Rockpool / {k}" for k in others if "rockpool" in impls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts = []
    for name, w in WORKLOADS.items():
        for mode in MODES:
            row = [f"{name} ({w['B']},{w['T']},{w['N']}) x {w['S']}", mode]
            for k in impls:
                r = recs.get((name, mode, k))
                row.append(common.fmt_time(r["median_s"]) if r else "—")
            rp = recs.get((name, mode, "rockpool"))
            for k in others:
                if rp is None:
                    continue
                r = recs.get((name, mode, k))
                ratio = rp["median_s"] / r["median_s"] if r else None
                row.append(f"{ratio:.1f}x" if ratio else "—")
                if ratio and mode == "forward+backward" and k in ("dropin", "native"):
                    verdicts.append((name, k, ratio, w["target"]))
            lines.append("| " + " | ".join(row) + " |")
    m = data["machine"]
    lines.append("")
    lines.append(f"Medians of {data['repeats']} interleaved rounds; {common.describe_machine(m)}; load average "
                 f"{m['load_average_at_start'][0]:.1f} at the start, {m['load_average_at_end'][0]:.1f} at the end.")
    for name, k, ratio, target in verdicts:
        lines.append(f"- {name}, {k}: {ratio:.1f}x Rockpool (target >= {target:.0f}x): "
                     f"{'met' if ratio >= target else 'NOT met'}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python bench/bench_synaptic.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--impls", default="dropin,native,rockpool,exodus")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    common.quiet_peer_logging()
    data = run(args)
    path = args.out or common.results_path("bench_synaptic", args.device)
    common.write_json(path, data)
    print(table(data))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
