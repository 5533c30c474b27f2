"""A small spiking network of LIFNeuron layers on random input: spike counts, and the measured
speed of the fused kernels against the pure-PyTorch reference (same spikes, bit for bit)."""
import argparse
import time

import torch
from torch import nn

import lif_cuda


def build(sizes, backend):
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(n_in, n_out, bias=False)
        nn.init.normal_(lin.weight, mean=0.2 / n_in ** 0.5, std=1.0 / n_in ** 0.5)
        layers += [lin, lif_cuda.LIFNeuron(n_out, tau_mem=0.02, threshold=1.0, backend=backend)]
    return nn.Sequential(*layers)


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 256, 10])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    print(f"lif_cuda {lif_cuda.__version__}: extension loaded = {lif_cuda.extension_loaded()}, "
          f"fused kernels on {args.device}: {lif_cuda.fused_available(args.device)}")
    torch.manual_seed(0)
    fused = build(args.sizes, "auto").to(args.device)
    ref = build(args.sizes, "reference").to(args.device)
    ref.load_state_dict(fused.state_dict())
    x = (torch.rand(args.batch, args.steps, args.sizes[0], device=args.device) < 0.1).float() * 2.0

    def run(net):
        for m in net:
            if isinstance(m, lif_cuda.LIFNeuron):
                m.reset_state()
        out = x
        counts = []
        for m in net:
            out = m(out)
            if isinstance(m, lif_cuda.LIFNeuron):
                counts.append(int(out.sum().item()))
        return out, counts

    out_f, counts = run(fused)
    out_r, _ = run(ref)
    print(f"network {args.sizes}, input (B={args.batch}, T={args.steps}, N={args.sizes[0]})")
    for i, c in enumerate(counts):
        print(f"  LIF layer {i + 1}: {c} spikes")
    print(f"fused output spikes identical to the reference: {torch.equal(out_f, out_r)}")

    def step(net):
        def fn():
            net.zero_grad()
            out, _ = run(net)
            out.sum().backward()
            if args.device == "cuda":
                torch.cuda.synchronize()
        return fn

    with torch.no_grad():
        tf = timed(lambda: run(fused), args.repeats)
        tr = timed(lambda: run(ref), args.repeats)
    print(f"forward          : fused {tf * 1e3:8.2f} ms   reference {tr * 1e3:8.2f} ms   speed-up {tr / tf:6.1f}x")
    tf = timed(step(fused), args.repeats)
    tr = timed(step(ref), args.repeats)
    print(f"forward+backward : fused {tf * 1e3:8.2f} ms   reference {tr * 1e3:8.2f} ms   speed-up {tr / tf:6.1f}x")
    print(f"(whole network, Linear layers included; median of {args.repeats} runs)")

    # The LIF layer alone, where the fused kernels do all the work.
    n = max(args.sizes)
    layer_f = lif_cuda.LIFNeuron(n, backend="auto").to(args.device)
    layer_r = lif_cuda.LIFNeuron(n, backend="reference").to(args.device)
    xi = (torch.randn(args.batch, args.steps, n, device=args.device) * 0.5 + 0.3).requires_grad_()

    def layer_step(layer):
        def fn():
            layer.reset_state()
            layer(xi).sum().backward()
            if args.device == "cuda":
                torch.cuda.synchronize()
        return fn

    tf = timed(layer_step(layer_f), args.repeats)
    tr = timed(layer_step(layer_r), args.repeats)
    print(f"one LIF layer (B={args.batch}, T={args.steps}, N={n}) forward+backward: "
          f"fused {tf * 1e3:.2f} ms, reference {tr * 1e3:.2f} ms, speed-up {tr / tf:.1f}x")


if __name__ == "__main__":
    main()
