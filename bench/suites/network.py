"""network: the Open Neuromorphic set-up, Linear(n,n) then the LIF layer, B=16, T=500, input randn
(not requiring grad), loss = output.sum(); forward and backward timed separately in each sample
(and added up as forward+backward). The Linear layer's time is in every implementation's figure.
"""
from bench.engine import Point
from bench.suites import add_impl_cases, describe_impls, parse_ints

NAME = "network"
ISOLATE = True
BASE = "fused"
NEURONS = {"cpu": "512,1024,2048,4096", "cuda": "512,1024,2048,4096,8192,16384"}
DEFAULTS = dict(impls="all", neurons=None, batch=16, steps=500, compile_max_t=100)
QUICK = dict(neurons="128,256", batch=4, steps=50, repeats=2, max_repeats=3, budget_s=0.2, compile_max_t=50)
NOTES = ("Peers run slightly different neuron equations (see 'equation' per implementation); only Rockpool's "
         "LIFNeuronTorch computes exactly lif_cuda's neuron.",)


def add_options(p):
    p.add_argument("--neurons", help="n,... (default 512..4096 on the CPU, ..16384 on CUDA)")
    p.add_argument("--batch", type=int, help="batch size (default 16)")
    p.add_argument("--steps", type=int, help="time steps (default 500)")
    p.add_argument("--compile-max-t", type=int, help="torch.compile(reference) only where T <= this (default 100)")


def describe(cfg):
    return describe_impls(cfg["impls"], cfg["device"])


def points(cfg):
    dev = "cuda" if cfg["device"].startswith("cuda") else "cpu"
    for n in parse_ints(cfg["neurons"] or NEURONS[dev]):
        shape = [cfg["batch"], cfg["steps"], n]
        point = Point(dict(neurons=n, shape=shape), cases={}, size=n * cfg["batch"] * cfg["steps"] ** 2)
        yield add_impl_cases(point, cfg, shape, suite=NAME)


def build(spec):
    from bench.impls import IMPLS
    from bench.workloads import OnmCase

    B, T, n = spec["shape"]
    return OnmCase(IMPLS[spec["impl"]], n, B, T, spec["device"], spec["seed"])
