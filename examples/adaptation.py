"""Where adaptation matters: a feed-forward layer must remember which of two cues it saw, across a
delay five times longer than its membrane time constant. LIFNeuron forgets within ~tau_mem;
AdaptiveLIF (SPEC §10) keeps the memory in its threshold, which rises with each spike and relaxes
over tau_adapt.

    python examples/adaptation.py                  # ~20 s on 2 CPU cores
    python examples/adaptation.py --device cuda

The task (one trial, dt = 1 ms): a cue of CUE steps on one of two groups of input channels (A or B),
then DELAY steps of background noise only, then a probe of PROBE steps that drives every channel.
The answer, A or B, is read from the hidden layer's spike counts during the probe. Background noise
(every channel, every step) runs throughout, so a residue of membrane potential cannot carry the
cue: after the delay it is far below the noise.

The network: Linear(2*G, H) -> neuron layer (LIFNeuron or AdaptiveLIF, tau_mem 20 ms; adaptive:
tau_adapt 200 ms, beta_adapt 8) -> spike counts in the probe window -> Linear(H, 2), cross-entropy,
Adam; the neuron parameters stay fixed, only the two Linear layers learn. Both models get the same
data, initial weights and steps.

Prints each model's held-out accuracy (LIF near chance, adaptive near 1) and, with matplotlib,
writes examples/output/adaptation.png: the effective threshold A = threshold + beta_adapt * b of
the adaptive neurons most driven by the cue, rising during the cue and relaxing through the delay,
for an A and a B trial; and both models' accuracy over training.
"""
import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import lif_cuda

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")
G, H = 20, 64  # input channels per cue group, hidden neurons
CUE, DELAY, PROBE = 30, 100, 20  # steps
CUE_RATE, NOISE_RATE, PROBE_RATE = 0.5, 0.05, 0.3  # spike probabilities per step
BETA_ADAPT, TAU_ADAPT = 8.0, 200e-3


def trials(n, generator):
    """(n, T, 2G) input spikes and (n,) labels (0: cue A, 1: cue B)."""
    T = CUE + DELAY + PROBE
    labels = torch.randint(0, 2, (n,), generator=generator)
    p = torch.full((n, T, 2 * G), NOISE_RATE)
    for k in (0, 1):
        rows = labels == k
        p[rows, :CUE, k * G:(k + 1) * G] = CUE_RATE
    p[:, CUE + DELAY:] = PROBE_RATE
    return torch.bernoulli(p, generator=generator), labels


class Net(nn.Module):
    def __init__(self, neuron):
        super().__init__()
        self.fc_in = nn.Linear(2 * G, H)
        if neuron == "adaptive":
            self.lif = lif_cuda.AdaptiveLIF(H, tau_adapt=TAU_ADAPT, beta_adapt=BETA_ADAPT)
        else:
            self.lif = lif_cuda.LIFNeuron(H)
        self.lif.requires_grad_(False)
        self.fc_out = nn.Linear(H, 2)

    def forward(self, x, record=False):
        self.lif.reset_state()
        spikes, _, rec = self.lif.evolve(self.fc_in(x), record=record)
        counts = spikes[:, CUE + DELAY:].sum(dim=1)
        return self.fc_out(counts), rec


def train(neuron, args, data):
    torch.manual_seed(args.seed)  # the same initial Linear weights for both models
    net = Net(neuron).to(args.device)
    with torch.no_grad():
        net.fc_in.weight.abs_().mul_(3.0)  # enough drive for the cue to make the layer spike
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=args.lr)
    (x_train, y_train), (x_test, y_test) = data
    curve = []
    for step in range(args.steps):
        i = torch.randint(0, x_train.shape[0], (args.batch,), generator=torch.Generator().manual_seed(step))
        logits, _ = net(x_train[i])
        loss = F.cross_entropy(logits, y_train[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 or step == args.steps - 1:
            with torch.no_grad():
                acc = (net(x_test)[0].argmax(1) == y_test).float().mean().item()
            curve.append((step + 1, acc))
    return net, curve


def picture(net, data, curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_test, y_test = data[1]
    picks = [int((y_test == k).nonzero()[0]) for k in (0, 1)]
    with torch.no_grad():
        _, rec = net(x_test[picks], record=True)
    lif = net.lif
    A = (lif.threshold + lif.beta_adapt * rec["adapt"]).cpu()  # (2, T, H)
    # The neurons the cue drives most (largest difference in threshold at the cue's end).
    driven = (A[0, CUE - 1] - A[1, CUE - 1]).abs().argsort(descending=True)[:3]
    t_ms = torch.arange(A.shape[1]) * 1.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for k, style in ((0, "-"), (1, "--")):
        for j, n in enumerate(driven.tolist()):
            ax.plot(t_ms, A[k, :, n], style, color=f"C{j}", label=f"neuron {n}, cue {'AB'[k]}")
    for t0, t1, what in ((0, CUE, "cue"), (CUE + DELAY, CUE + DELAY + PROBE, "probe")):
        ax.axvspan(t0, t1, color="0.9")
        ax.text((t0 + t1) / 2, 0.02, what, ha="center", va="bottom", fontsize=8,
                transform=ax.get_xaxis_transform())
    ax.set(xlabel="time (ms)", ylabel="threshold + beta_adapt * b",
           title="AdaptiveLIF: the threshold rises with spikes,\nrelaxes over tau_adapt")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, curve in curves.items():
        ax.plot([s for s, _ in curve], [a for _, a in curve], "o-", label=name)
    ax.axhline(0.5, color="0.6", lw=0.8)
    ax.set(xlabel="training step", ylabel="held-out accuracy", ylim=(0.3, 1.02),
           title=f"remember a cue across {DELAY} ms (tau_mem = 20 ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(args.seed)
    data = tuple((x.to(args.device), y.to(args.device)) for x, y in (trials(2048, g), trials(512, g)))
    curves, nets = {}, {}
    for neuron in ("lif", "adaptive"):
        t0 = time.perf_counter()
        nets[neuron], curves[neuron] = train(neuron, args, data)
        print(f"{neuron:9s} held-out accuracy {curves[neuron][-1][1]:.3f} ({time.perf_counter() - t0:.1f} s)")
    if not args.no_plot:
        try:
            os.makedirs(OUT_DIR, exist_ok=True)
            path = os.path.join(OUT_DIR, "adaptation.png")
            picture(nets["adaptive"], data, curves, path)
            print(f"picture: {os.path.relpath(path)}")
        except ImportError:
            print('picture: matplotlib is not installed (pip install -e ".[demo]")')
    return curves


if __name__ == "__main__":
    main()
