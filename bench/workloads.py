"""The measured calls. A case owns its inputs and module; `run()` makes one timed sample and returns
{phase: seconds}; `run_memory()` makes one call under PeakMemory and returns {phase: bytes}.

Workloads:
  layer  the LIF layer alone on input (B,T,N). Phases: "forward" (inference, under torch.no_grad,
         so nothing is kept for backward) and "forward+backward" (input requires grad,
         loss = spikes.sum(), one clock around forward and backward).
  onm    the Open Neuromorphic set-up: Linear(n,n) then LIF, input (B,T,n) that needs no grad,
         loss = output.sum(); "forward" and "backward" timed separately in the same sample.
Training (the train suite): one sample is one training step or epoch, optimiser included:
  digits_train  examples/train_digits.py's network and data, trained by any implementation's LIF
                layer; run() = one epoch, report() = test accuracy and losses.
  onm_train     the onm network, one training step (forward, MSE of the spike rates against fixed
                random targets, backward, Adam) on random input.
Copy baselines (layer, forward only): `dst.copy_(x)` into a preallocated tensor and `x.clone()`
(which allocates, as the fused op allocates its spikes), moving the same bytes as the fused
forward's input read + spikes written.
"""
import importlib.util
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

from bench.engine import REPO, sync, timed
from bench.memory import PeakMemory

LAYER_MODES = ("forward", "forward+backward")
ONM_PHASES = ("forward", "backward")


def make_input(shape, seed, device, mean=0.05, std=0.5):
    """Reproducible float32 input, drawn on the CPU (same values on every device)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32) * std + mean
    return x.to(device)


def _clear_grads(module, *tensors):
    for p in module.parameters():
        p.grad = None
    for t in tensors:
        if t is not None:
            t.grad = None


class LayerCase:
    def __init__(self, impl, shape, mode, device, seed=0):
        assert mode in LAYER_MODES, mode
        self.impl, self.shape, self.mode, self.device = impl, tuple(shape), mode, torch.device(device)
        self.module = impl.layer(shape[2], device)
        x = impl.native(make_input(shape, seed, device))
        self.x = x.requires_grad_() if mode == "forward+backward" else x
        self.phases = (mode,)

    def _call(self):
        if self.mode == "forward":
            with torch.no_grad():
                return self.module(self.x)
        out = self.module(self.x)
        out.sum().backward()
        return out

    def run(self):
        _clear_grads(self.module, self.x)
        seconds, _ = timed(self._call, self.device)
        return {self.mode: seconds}

    def spikes_btn(self):
        """One forward's spikes as (B,T,N) (untimed; for the equality check and the rate)."""
        with torch.no_grad():
            return self.impl.to_btn(self.module(self.x.detach()))

    def run_memory(self):
        _clear_grads(self.module, self.x)
        with PeakMemory(self.device) as pm:
            out = self._call()
            sync(self.device)
        del out
        return {self.mode: pm.peak_bytes}


class OnmCase:
    def __init__(self, impl, n, batch, steps, device, seed=0):
        self.impl, self.n, self.device = impl, n, torch.device(device)
        self.shape = (batch, steps, n)
        torch.manual_seed(seed)  # the same Linear weights for every implementation
        linear = nn.Linear(n, n)
        self.module = nn.Sequential(linear.to(device), impl.layer(n, device))
        self.x = impl.native(make_input(self.shape, seed + 1, device, mean=0.0, std=1.0))
        self.phases = ONM_PHASES

    def run(self):
        _clear_grads(self.module)
        t_fwd, loss = timed(lambda: self.module(self.x).sum(), self.device)
        t_bwd, _ = timed(loss.backward, self.device)
        return {"forward": t_fwd, "backward": t_bwd}

    def run_memory(self):
        """Peak over the forward, and over the backward, both above what was there before forward."""
        _clear_grads(self.module)
        with PeakMemory(self.device) as pm:
            loss = self.module(self.x).sum()
            sync(self.device)
            fwd = pm.mark()
            pm.reset_peak()
            loss.backward()
            sync(self.device)
            bwd = pm.mark()
        del loss
        return {"forward": fwd, "backward": bwd}

    def spikes_btn(self):
        with torch.no_grad():
            return self.impl.to_btn(self.module(self.x))


def train_digits_example():
    """examples/train_digits.py as a module: the one definition of the digits task (data, encoding,
    network, training loop), so the benchmark trains exactly what the demo trains."""
    name = "lif_cuda_examples_train_digits"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "examples", "train_digits.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


class DigitsTrainCase:
    """One implementation's LIF layer (as bench/impls.py configures it) in the demo's network, trained
    on the demo's batches from the demo's initial weights. run() = one epoch: {"epoch": seconds}.
    Every call trains: the engine must not add untimed calls (Point.burst=False, no warm-up)."""

    def __init__(self, impl, device, seed=0, overrides=None):
        td = train_digits_example()
        cfg = td.Config(seed=seed, device=str(device), **(overrides or {}))
        self.data = td.load_digits_split(cfg.test_size, seed)
        self.trainer = td.Trainer(impl.key, cfg, self.data, lif=impl.layer(cfg.hidden, device),
                                  time_major=impl.time_major)
        self.phases = ("epoch",)

    def run(self):
        return {"epoch": self.trainer.train_epoch().seconds}

    def report(self):
        h = self.trainer.history
        return dict(epochs=len(h), test_accuracy=self.trainer.test(), train_accuracy=h[-1].train_accuracy,
                    last_epoch_loss=h[-1].mean_loss, samples_per_epoch=sum(h[-1].samples),
                    losses=[s.losses for s in h])


class TrainStep:
    """One timed training step (forward, the case's `_loss()`, backward, the optimiser `self.opt`):
    {"step": seconds}."""

    def _step(self):
        loss = self._loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def run(self):
        seconds, _ = timed(self._step, self.device)
        return {"step": seconds}


class OnmTrainCase(TrainStep, OnmCase):
    """One training step of the onm network: forward, loss, backward, Adam on the Linear layer (the LIF
    layer's parameters fixed, as in the digits task). Random input and targets: a speed measurement."""

    def __init__(self, impl, n, batch, steps, device, seed=0):
        super().__init__(impl, n, batch, steps, device, seed)
        self.module[1].requires_grad_(False)
        g = torch.Generator().manual_seed(seed + 2)
        self.target = torch.rand((batch, n), generator=g).to(device)
        self.opt = torch.optim.Adam(self.module[0].parameters(), lr=1e-3)
        self.phases = ("step",)

    def _loss(self):
        rates = self.module(self.x).mean(dim=0 if self.impl.time_major else 1)
        return F.mse_loss(rates, self.target)

    def run_memory(self):
        raise NotImplementedError("onm_train measures time only")


class CopyCase:
    """dst.copy_(x): reads and writes B*T*N floats, the bytes of the fused forward (in + spikes)."""

    key = "copy_"
    label = "copy_ (preallocated)"

    def __init__(self, shape, device, seed=0):
        self.device = torch.device(device)
        self.x = make_input(shape, seed, device)
        self.dst = torch.empty_like(self.x)
        self.phases = ("forward",)

    def run(self):
        seconds, _ = timed(lambda: self.dst.copy_(self.x), self.device)
        return {"forward": seconds}


class CloneCase(CopyCase):
    """x.clone(): the same bytes, into freshly allocated memory (page faults included on CPU)."""

    key = "clone"
    label = "clone (allocating)"

    def run(self):
        seconds, out = timed(lambda: self.x.clone(), self.device)
        del out
        return {"forward": seconds}
