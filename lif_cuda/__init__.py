"""lif_cuda: a fused, bit-exact leaky integrate-and-fire layer for PyTorch.

    import lif_cuda
    layer = lif_cuda.LIFNeuron(128)          # drop-in for Rockpool's LIFNeuronTorch
    spikes = layer(torch.randn(32, 100, 128))
    syn = lif_cuda.SynapticLIF((2 * 128, 128), has_rec=True)   # Rockpool's LIFTorch: synapses, recurrence
    alif = lif_cuda.AdaptiveLIF(128)         # adaptive threshold (SPEC §10)
    long = lif_cuda.TimeChunked(torch.nn.Linear(128, 128), layer, chunk=256)   # long T in little memory

`lif_cuda.lif_evolve(...)` is the functional form; `lif_cuda.reference` the pure-PyTorch oracle.
"""
from . import (
    _ext,
    ops,  # noqa: F401  (registers the fake kernels)
)
from .chunked import TimeChunked
from .functional import adaptive_evolve, ahp_synaptic_evolve, fused_available, lif_evolve, synaptic_evolve
from .neurons import AdaptiveLIF, AHPSynapticLIF, LIFNeuron, SynapticLIF
from .reference import adaptive_evolve_reference, lif_evolve_reference, synaptic_evolve_reference
from .spike_linear import SpikeLinear
from .surrogates import PeriodicExponential, StepPWL

__version__ = "0.1.0"

__all__ = [
    "LIFNeuron",
    "lif_evolve",
    "lif_evolve_reference",
    "SynapticLIF",
    "SpikeLinear",
    "TimeChunked",
    "synaptic_evolve",
    "synaptic_evolve_reference",
    "AHPSynapticLIF",
    "ahp_synaptic_evolve",
    "AdaptiveLIF",
    "adaptive_evolve",
    "adaptive_evolve_reference",
    "fused_available",
    "StepPWL",
    "PeriodicExponential",
    "extension_loaded",
    "output_pool",
]


def extension_loaded() -> bool:
    """Whether the compiled kernels (lif_cuda._C) were loaded."""
    return _ext.loaded()


def output_pool(limit_bytes=None) -> dict:
    """The CPU output pool: large outputs of the fused ops (spikes, recorded membrane, the membrane
    saved for backward, the input gradient; 1 MiB and more) reuse buffers that stay mapped between
    calls instead of mapping fresh memory whose every page the kernel faults in and zeroes on first
    touch. Buffers come back to the pool when their tensors die; at most `limit_bytes` of unused
    buffers are kept (the least recently returned are freed first). Default 1 GiB, or
    LIF_OUTPUT_POOL_MB from the environment when the library loads; 0 turns the pool off and frees
    what it holds. Returns {"limit_bytes", "held_bytes", "hits", "misses"} (after setting the limit
    when one is given). Results never depend on it."""
    if not _ext.loaded():
        raise RuntimeError(f"lif_cuda: {_ext.load_failure()}")
    if limit_bytes is None:
        return _ext._C.output_pool()
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int):
        raise TypeError(f"limit_bytes must be an int (bytes), got {type(limit_bytes).__name__}")
    if limit_bytes < 0:
        raise ValueError(f"limit_bytes must be >= 0, got {limit_bytes}")
    return _ext._C.output_pool(limit_bytes)
