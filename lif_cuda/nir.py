"""NIR (the Neuromorphic Intermediate Representation) export and import.

    import nir, lif_cuda.nir
    graph = lif_cuda.nir.to_nir(net)           # nn.Sequential of nn.Linear / LIFNeuron -> nir.NIRGraph
    nir.write("net.nir", graph)
    net = lif_cuda.nir.from_nir(nir.read("net.nir"))
    node = lif_cuda.nir.to_nir(layer)          # one LIF layer -> nir.LIF, and back with from_nir

A LIF layer maps to `nir.LIF` as Rockpool maps its `LIFNeuronTorch`: tau = tau_mem,
v_threshold = threshold, v_leak = bias, and dt = min(tau / (1 + r)) on import. Two differences from
Rockpool 3.1's export, both so that export then import gives back the same layer: v_leak carries the
bias (Rockpool writes zeros), and r = tau/dt - 1, which that import formula inverts (Rockpool writes
tau*exp(-dt/tau)/dt, which it reads back as a slightly smaller dt). What NIR cannot say (learning
window, max spikes per step, subtractive reset, dt to the last bit) goes in the node's metadata
under "lif_cuda.*". Needs the `nir` extra.

A synaptic layer (`SynapticLIF`, lif_cuda.rockpool.LIFTorch, Rockpool's LIFTorch) with one synapse
per neuron maps to `nir.CubaLIF` (tau_syn, tau_mem, r, v_leak = bias, v_threshold), with the same
choice of r; with recurrent weights to a sub-graph {input, CubaLIF, Linear(w_rec.T), output} with the
edge Linear -> CubaLIF closing the loop, as Rockpool reads one. NIR has no node for several synaptic
currents per neuron: such a layer is refused, and so is a layer with an after-hyperpolarisation
current (AHPSynapticLIF, aLIFTorch: SPEC §9), which would be a second one.
"""
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from . import LIFNeuron, SynapticLIF

try:
    import nir
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"lif_cuda.nir needs NIR, which could not be imported ({exc}); install it with: pip install 'lif_cuda[nir]'"
    ) from exc

__all__ = ["to_nir", "from_nir"]

_META = "lif_cuda."  # prefix of the metadata keys this module writes and reads


def _has(module, *names):
    # None: a layer of lif_cuda's with its leaks given as decays has no time constants.
    return all(getattr(module, a, None) is not None for a in names)


def _is_synaptic(module):
    # SynapticLIF, lif_cuda.rockpool.LIFTorch and Rockpool's own LIFTorch.
    return _has(module, "tau_mem", "tau_syn", "threshold", "bias", "dt", "n_neurons")


def _is_lif(module):
    # LIFNeuron, lif_cuda.rockpool.LIFNeuronTorch and Rockpool's own LIFNeuronTorch all qualify;
    # an AdaptiveLIF does not (NIR has no adaptive threshold: exporting it as a LIF would drop it).
    return _has(module, "tau_mem", "threshold", "bias", "dt", "n_neurons") and not hasattr(module, "tau_adapt")


def _per_neuron(t, n):
    """A (N,) or () parameter as an (N,) numpy array, in its own dtype."""
    return np.broadcast_to(t.detach().cpu().numpy(), (n,)).copy()


def _lif_to_nir(module):
    n = int(module.n_neurons)
    dt = float(module.dt)
    tau = _per_neuron(module.tau_mem, n)
    # float64, so that tau / (1 + r) gives dt back to float64 rounding, not float32's.
    r = tau.astype(np.float64) / dt - 1.0
    metadata = {
        _META + "dt": dt,
        _META + "reset": "subtractive",
        _META + "learning_window": float(module.learning_window),
        _META + "max_spikes_per_dt": float(module.max_spikes_per_dt),
    }
    return nir.LIF(
        tau=tau,
        r=r,
        v_leak=_per_neuron(module.bias, n),
        v_threshold=_per_neuron(module.threshold, n),
        metadata=metadata,
    )


def _synaptic_to_nir(module):
    n, s = int(module.n_neurons), int(module.n_synapses)
    if s != 1:
        raise NotImplementedError(
            f"lif_cuda.nir.to_nir: this layer has {s} synaptic currents per neuron; NIR's CubaLIF has one "
            "(export layers with one synapse per neuron)"
        )
    dt = float(module.dt)
    tau_mem = _per_neuron(module.tau_mem, n)
    metadata = {
        _META + "dt": dt,
        _META + "reset": "subtractive",
        _META + "learning_window": float(module.learning_window),
        _META + "max_spikes_per_dt": float(module.max_spikes_per_dt),
    }
    cuba = nir.CubaLIF(
        tau_syn=np.broadcast_to(module.tau_syn.detach().cpu().numpy().reshape(-1), (n,)).copy(),
        tau_mem=tau_mem,
        r=tau_mem.astype(np.float64) / dt - 1.0,  # as for nir.LIF: import gives dt back
        v_leak=_per_neuron(module.bias, n),
        v_threshold=_per_neuron(module.threshold, n),
        metadata=metadata,
    )
    w_rec = getattr(module, "w_rec", None)
    if w_rec is None or not (getattr(module, "has_rec", False) or getattr(module, "_has_rec", False)):
        return cuba
    # The recurrence as Rockpool writes it: a sub-graph whose Linear feeds the neurons back.
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n])}),
        "lif": cuba,
        "w_rec": nir.Linear(weight=w_rec.detach().cpu().numpy().T.copy()),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def _recurrent_cuba(graph):
    """(CubaLIF, recurrent weights (N, N)) of a recurrent CubaLIF sub-graph, or None."""
    kinds = {type(v): v for v in graph.nodes.values()}
    if len(graph.nodes) != 4 or nir.CubaLIF not in kinds or not ({nir.Linear, nir.Affine} & kinds.keys()):
        return None
    rec = kinds.get(nir.Linear, kinds.get(nir.Affine))
    if isinstance(rec, nir.Affine) and np.any(np.asarray(rec.bias) != 0):
        warnings.warn("lif_cuda.nir.from_nir: the recurrent Affine's bias is ignored", RuntimeWarning, stacklevel=4)
    return kinds[nir.CubaLIF], np.asarray(rec.weight).T


def _synaptic_from_nir(node, w_rec, synaptic_class, dt, kwargs):
    tau_mem = np.asarray(node.tau_mem, dtype=np.float64)
    r = np.asarray(node.r, dtype=np.float64)
    dt = _dt_of(node, tau_mem, r, dt)
    if np.any(np.asarray(node.w_in) != 1):
        raise NotImplementedError("lif_cuda.nir.from_nir: a CubaLIF with w_in != 1 has no lif_cuda layer")
    if node.v_reset is not None and np.any(np.asarray(node.v_reset) != 0):
        warnings.warn(
            "lif_cuda.nir.from_nir: nir.CubaLIF has a non-zero v_reset; lif_cuda neurons reset by subtracting "
            "the threshold, so v_reset is ignored",
            RuntimeWarning,
            stacklevel=4,
        )
    n = int(tau_mem.size)
    args = dict(
        shape=(n, n),
        tau_mem=torch.tensor(np.asarray(node.tau_mem).reshape(-1)),
        tau_syn=torch.tensor(np.asarray(node.tau_syn).reshape(n, 1)),
        threshold=torch.tensor(np.asarray(node.v_threshold).reshape(-1)),
        bias=torch.tensor(np.asarray(node.v_leak).reshape(-1)),
        dt=dt,
        learning_window=_meta(node, "learning_window", 0.5),
        max_spikes_per_dt=_meta(node, "max_spikes_per_dt", 2.0**16),
    )
    if w_rec is not None:
        args.update(has_rec=True, w_rec=torch.tensor(np.asarray(w_rec, dtype=np.float32)))
    args.update(kwargs)
    return synaptic_class(**args)


def _linear_to_nir(module):
    weight = module.weight.detach().cpu().numpy()
    if module.bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=module.bias.detach().cpu().numpy())


def _size_in(module):
    return module.in_features if isinstance(module, nn.Linear) else int(getattr(module, "size_in", module.n_neurons))


def _size_out(module):
    return module.out_features if isinstance(module, nn.Linear) else int(module.n_neurons)


def _module_to_nir(module):
    if hasattr(module, "w_ahp"):  # AHPSynapticLIF, Rockpool's aLIFTorch and ours (SPEC §9)
        raise NotImplementedError(
            f"lif_cuda.nir.to_nir: {type(module).__name__} has an after-hyperpolarisation current (w_ahp, "
            "tau_ahp); NIR has no node for it (CubaLIF has one synaptic current), and dropping it would change "
            "the network"
        )
    if _is_synaptic(module):
        return _synaptic_to_nir(module)
    if _is_lif(module):
        return _lif_to_nir(module)
    if isinstance(module, nn.Linear):
        return _linear_to_nir(module)
    raise NotImplementedError(
        f"lif_cuda.nir.to_nir: cannot export {type(module).__name__}; supported are LIF layers, nn.Linear "
        "and nn.Sequential chains of them"
    )


def to_nir(module):
    """A LIF layer (`LIFNeuron` or a Rockpool-style `LIFNeuronTorch`) as `nir.LIF`; an `nn.Linear`
    as `nir.Affine`/`nir.Linear`; an `nn.Sequential` of those as a chain-shaped `nir.NIRGraph`."""
    if not isinstance(module, nn.Sequential):
        return _module_to_nir(module)
    children = list(module.named_children())
    if not children:
        raise ValueError("lif_cuda.nir.to_nir: the nn.Sequential is empty")
    nodes = OrderedDict(input=nir.Input(input_type={"input": np.array([_size_in(children[0][1])])}))
    names = ["input"]
    for name, child in children:
        if name in ("input", "output"):
            raise ValueError(f"lif_cuda.nir.to_nir: a layer may not be called {name!r} (NIR reserves it)")
        nodes[name] = _module_to_nir(child)
        names.append(name)
    nodes["output"] = nir.Output(output_type={"output": np.array([_size_out(children[-1][1])])})
    names.append("output")
    return nir.NIRGraph(nodes=dict(nodes), edges=list(zip(names[:-1], names[1:])))


def _meta(node, key, default):
    value = node.metadata.get(_META + key, default)
    return float(np.asarray(value).item()) if value is not None else default


def _dt_of(node, tau, r, dt):
    """dt as given, else Rockpool's mapping min(tau / (1 + r)). A node lif_cuda wrote also holds dt
    itself: the formula gives it back only to float64 rounding, so take the stored value when the two
    agree (and the formula when r was edited)."""
    if dt is None:
        dt = float(np.min(tau / (1.0 + r)))
        stored = _meta(node, "dt", None)
        if stored is not None and abs(stored - dt) <= 1e-9 * dt:
            dt = stored
    return dt


def _lif_from_nir(node, module_class, dt, kwargs):
    tau = np.asarray(node.tau, dtype=np.float64)
    r = np.asarray(node.r, dtype=np.float64)
    dt = _dt_of(node, tau, r, dt)
    v_reset = np.asarray(node.v_reset) if node.v_reset is not None else None
    if v_reset is not None and np.any(v_reset != 0):
        warnings.warn(
            "lif_cuda.nir.from_nir: nir.LIF has a non-zero v_reset; lif_cuda neurons reset by subtracting "
            "the threshold, so v_reset is ignored",
            RuntimeWarning,
            stacklevel=3,
        )
    args = dict(
        shape=(int(tau.size),),
        tau_mem=torch.tensor(np.asarray(node.tau).reshape(-1)),
        threshold=torch.tensor(np.asarray(node.v_threshold).reshape(-1)),
        bias=torch.tensor(np.asarray(node.v_leak).reshape(-1)),
        dt=dt,
        learning_window=_meta(node, "learning_window", 0.5),
        max_spikes_per_dt=_meta(node, "max_spikes_per_dt", 2.0**16),
    )
    args.update(kwargs)
    return module_class(**args)


def _node_from_nir(node, module_class, dt, kwargs, synaptic_class=SynapticLIF):
    if isinstance(node, nir.CubaLIF):
        return _synaptic_from_nir(node, None, synaptic_class, dt, kwargs)
    if isinstance(node, nir.NIRGraph) and _recurrent_cuba(node) is not None:
        return _synaptic_from_nir(*_recurrent_cuba(node), synaptic_class, dt, kwargs)
    if isinstance(node, nir.LIF):
        return _lif_from_nir(node, module_class, dt, kwargs)
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = torch.tensor(np.asarray(node.weight, dtype=np.float32))
        has_bias = isinstance(node, nir.Affine)
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if has_bias:
                layer.bias.copy_(torch.tensor(np.asarray(node.bias, dtype=np.float32)))
        return layer
    raise NotImplementedError(
        f"lif_cuda.nir.from_nir: cannot import {type(node).__name__}; supported are nir.LIF, nir.Affine, "
        "nir.Linear and chain-shaped nir.NIRGraph of them"
    )


def _chain(graph):
    """The node names of a chain-shaped graph from its Input to its Output, without those two."""
    succ = {}
    for src, dst in graph.edges:
        if src in succ:
            raise NotImplementedError("lif_cuda.nir.from_nir: only chain-shaped graphs (no branches) are supported")
        succ[src] = dst
    inputs = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise NotImplementedError("lif_cuda.nir.from_nir: the graph must have exactly one nir.Input")
    order, name = [], inputs[0]
    while name in succ:
        name = succ[name]
        if isinstance(graph.nodes[name], nir.Output):
            break
        if name in order:
            raise NotImplementedError("lif_cuda.nir.from_nir: recurrent graphs are not supported")
        order.append(name)
    else:
        raise NotImplementedError("lif_cuda.nir.from_nir: the chain from the nir.Input never reaches a nir.Output")
    if len(order) + 2 != len(graph.nodes):
        raise NotImplementedError("lif_cuda.nir.from_nir: only chain-shaped graphs (no branches) are supported")
    return order


def from_nir(node, module_class=LIFNeuron, dt=None, synaptic_class=SynapticLIF, **kwargs):
    """A `nir.LIF` as a LIF layer; a chain-shaped `nir.NIRGraph` as an `nn.Sequential`.

    module_class: the LIF class to build, called with the seed's constructor arguments
    (default `lif_cuda.LIFNeuron`; `lif_cuda.rockpool.LIFNeuronTorch` works too). dt: override the
    time step (default: min(tau / (1 + r)), as Rockpool). Other keyword arguments (backend,
    spike_generation_fn, noise_std, ...) go to every LIF layer's constructor. synaptic_class: what a
    `nir.CubaLIF` (or a recurrent CubaLIF sub-graph) becomes (default `lif_cuda.SynapticLIF`;
    `lif_cuda.rockpool.LIFTorch` works too).
    """
    if isinstance(node, nir.NIRGraph) and _recurrent_cuba(node) is None:
        layers = OrderedDict(
            (name.replace(".", "_"), _node_from_nir(node.nodes[name], module_class, dt, kwargs, synaptic_class))
            for name in _chain(node)
        )
        return nn.Sequential(layers)
    return _node_from_nir(node, module_class, dt, kwargs, synaptic_class)
