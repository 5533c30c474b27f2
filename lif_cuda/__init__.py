"""lif_cuda: a fused, bit-exact leaky integrate-and-fire layer for PyTorch.

    import lif_cuda
    layer = lif_cuda.LIFNeuron(128)          # drop-in for Rockpool's LIFNeuronTorch
    spikes = layer(torch.randn(32, 100, 128))
    syn = lif_cuda.SynapticLIF((2 * 128, 128), has_rec=True)   # Rockpool's LIFTorch: synapses, recurrence

`lif_cuda.lif_evolve(...)` is the functional form; `lif_cuda.reference` the pure-PyTorch oracle.
"""
from . import (
    _ext,
    ops,  # noqa: F401  (registers fake kernels and autograd)
)
from .functional import fused_available, lif_evolve
from .module import LIFNeuron
from .reference import PeriodicExponential, StepPWL, lif_evolve_reference, synaptic_evolve_reference
from .synaptic import SynapticLIF, synaptic_evolve

__version__ = "0.1.0"

__all__ = [
    "LIFNeuron",
    "lif_evolve",
    "lif_evolve_reference",
    "SynapticLIF",
    "synaptic_evolve",
    "synaptic_evolve_reference",
    "fused_available",
    "StepPWL",
    "PeriodicExponential",
    "extension_loaded",
]


def extension_loaded() -> bool:
    """Whether the compiled kernels (lif_cuda._C) were loaded."""
    return _ext.loaded()
