"""The readable pure-PyTorch LIF: one Python step per time step, exactly SPEC §1-§2.

It is the parity oracle for the fused kernels and the fallback when the extension is missing.
It imports nothing of lif_cuda's but the spike functions (lif_cuda.surrogates) and computes in the
input's dtype throughout (float64 stays float64); autograd through it gives the gradients of SPEC §3.
"""
import torch
import torch.nn.functional as F

from .surrogates import PeriodicExponential, StepPWL

__all__ = [
    "StepPWL",
    "PeriodicExponential",
    "lif_evolve_reference",
    "synaptic_evolve_reference",
    "adaptive_evolve_reference",
    "tau_to_decay",
]


def tau_to_decay(dt, tau_mem):
    """alpha = exp(-dt / tau), computed by torch exactly like this everywhere (SPEC §1)."""
    return torch.exp(-dt / tau_mem)


def _fire(u, z_t, bias, threshold, spike_generation_fn, learning_window, max_spikes_per_dt):
    """The end of every model's step (SPEC §1): u = (u + z) + bias, each op rounded; the spikes; the
    subtractive reset. Returns (spikes, membrane after the reset)."""
    if z_t is not None:
        u = u + z_t
    u = u + bias
    s = spike_generation_fn.apply(u, threshold, learning_window, max_spikes_per_dt)
    return s, u - s * threshold


def _step_inputs(input, noise, t, lengths, dtype):
    """Step t's input and noise terms (B,N) and, with lengths (SPEC §8), which rows still run at t
    ((B,1); None without lengths): a row's padding steps get zero input and noise, so that their
    gradient is 0 and NaN padding stays out of the arithmetic."""
    x_t = input[:, t]
    z_t = None if noise is None else noise[:, t].to(dtype)
    if lengths is None:
        return x_t, z_t, None
    active = (t < lengths).unsqueeze(1)
    x_t = torch.where(active, x_t, torch.zeros_like(x_t))
    if z_t is not None:
        z_t = torch.where(active, z_t, torch.zeros_like(z_t))
    return x_t, z_t, active


def lif_evolve_reference(input, v0, tau_mem, threshold, bias, dt, noise=None, learning_window=0.5,
                         max_spikes_per_dt=2.0**16, spike_generation_fn=StepPWL, record=False, noise_std=0.0,
                         lengths=None, decays=False):
    """Evolve LIF neurons over input (B,T,N) from membrane v0 ((B,N) or (N,)).

    Parameters tau_mem, threshold, bias are (N,) or (); noise, if given, is the exact (B,T,N) term
    added at every step; else noise_std > 0 draws noise_std * sqrt(dt) * randn (float32 scale, as
    Rockpool does). float16/bfloat16 input is computed in float32, spikes returned in its dtype.
    lengths (SPEC §8), an integer tensor (B,) on input's device (unchecked here): row b runs its
    first lengths[b] steps. Done by masking: on later steps (padding) the row's input and noise are
    replaced by 0 (so their gradient is 0, and NaN padding stays out of the arithmetic), its spikes
    by 0 and its state keeps its value; the recorded membrane there is that value detached, so that
    the gradients arriving on padding positions are ignored.
    decays: tau_mem is the decay alpha itself (Rockpool's leak_mode "decays"), used as it is.
    Returns (spikes (B,T,N), vmem (B,T,N) post-reset or None, final state (B,N)).
    """
    io_dtype = input.dtype
    half_io = io_dtype in (torch.float16, torch.bfloat16)
    if half_io:
        input = input.float()
    dtype = input.dtype
    B, T, N = input.shape
    if noise is None and noise_std > 0:
        zeta = noise_std * torch.sqrt(torch.tensor(dt, dtype=dtype, device=input.device))
        noise = zeta * torch.randn((B, T, N), dtype=dtype, device=input.device)
    tau_mem, threshold, bias = (p.to(dtype) for p in (tau_mem, threshold, bias))
    alpha = tau_mem if decays else tau_to_decay(dt, tau_mem)
    w = v0.to(dtype).expand(B, N)
    spikes, vmem = [], []
    for t in range(T):
        x_t, z_t, active = _step_inputs(input, noise, t, lengths, dtype)
        s, w_new = _fire(alpha * w + x_t, z_t, bias, threshold, spike_generation_fn, learning_window, max_spikes_per_dt)
        if lengths is None:
            w = w_new
        else:
            s = torch.where(active, s, torch.zeros_like(s))
            w_kept = w.expand(B, N)
            w = torch.where(active, w_new, w_kept)
        spikes.append(s)
        if record:
            vmem.append(w if lengths is None else torch.where(active, w, w_kept.detach()))
    if T == 0:
        empty = input.new_empty((B, 0, N))
        return empty.to(io_dtype), (empty.clone() if record else None), w.clone()
    spikes = torch.stack(spikes, dim=1).to(io_dtype)
    vmem = torch.stack(vmem, dim=1) if record else None
    return spikes, vmem, w


def synaptic_evolve_reference(input, v0, i0, tau_mem, tau_syn, threshold, bias, dt, w_rec=None, s0=None, noise=None,
                              learning_window=0.5, max_spikes_per_dt=2.0**16, spike_generation_fn=StepPWL,
                              record=False, synapse_sum=None, lengths=None, w_ahp=None, tau_ahp=None, h0=None,
                              decays=False):
    """Evolve LIF neurons with synaptic currents (SPEC §7, Rockpool's LIFTorch) over input (B,T,N*S).

    i0: synaptic currents (B,N,S) or (N,S), which give N and S (input element n*S + k feeds synapse
    k of neuron n); v0: membrane (B,N) or (N,); s0: spikes of the step before the first ((B,N),
    (N,) or None for zeros), the first input of the recurrent product; tau_mem, threshold, bias (N,)
    or (); tau_syn (N,S), (1,S) or (); w_rec (N, N*S) or None; noise the exact (B,T,N) term or None.
    Each step, as Rockpool computes it: i = i + x[t]; r = linear(s, w_rec.T) (viewed (B,N,S));
    i = i + r; w = w * alpha; i = i * beta; u = ((w + i.sum(-1)) + z) + bias; s = spike_fn(u);
    w = u - s * thr. float16/bfloat16 input is computed in float32, spikes returned in its dtype.
    Returns (spikes (B,T,N), vmem (B,T,N), isyn (B,T,N,S), irec (B,T,N,S) (None each unless record;
    irec zeros without w_rec), final membrane (B,N), final currents (B,N,S), final spikes (B,N)).
    synapse_sum: the sum over the synapses, `i.sum(-1)` by default (the host test of the CUDA
    kernels' thread code passes the CUDA reduction's order, to check it without a GPU).
    lengths (SPEC §8), an integer tensor (B,) on input's device (unchecked here): row b runs its
    first lengths[b] steps. Done by masking, as lif_evolve_reference does: on later steps (padding)
    the row's input and noise are replaced by 0, its spikes by 0, and its membrane, currents and last
    spikes keep their values; the records of the membrane and the currents there are those values
    detached (gradients arriving on padding positions are ignored), the record of the recurrent
    current is 0.
    decays: tau_mem and tau_syn are the decays alpha and beta themselves (Rockpool's leak_mode
    "decays"), used as they are.
    With the AHP current (SPEC §9, Rockpool's aLIFTorch): w_ahp and tau_ahp ((N,) or ()) and h0
    ((B,N) or (N,)), all three. After the synapses' decay, h = (h + s * w_ahp) * exp(-dt/tau_ahp)
    (s the previous step's spikes), and the membrane sums the S + 1 lanes torch.cat((i, h), 2), as
    Rockpool does. Returns then (spikes, vmem, isyn, irec, iahp (B,T,N) (records, None each unless
    record), final membrane, currents, spikes, final h (B,N)).
    """
    ahp = w_ahp is not None
    io_dtype = input.dtype
    if io_dtype in (torch.float16, torch.bfloat16):
        input = input.float()
    dtype = input.dtype
    B, T, _ = input.shape
    N, S = i0.shape[-2:]
    x = input.reshape(B, T, N, S)
    tau_mem, tau_syn, threshold, bias = (p.to(dtype) for p in (tau_mem, tau_syn, threshold, bias))
    alpha, beta = (tau_mem, tau_syn) if decays else (tau_to_decay(dt, tau_mem), tau_to_decay(dt, tau_syn))
    if ahp:
        w_ahp, gamma = w_ahp.to(dtype), tau_to_decay(dt, tau_ahp.to(dtype))
        h = h0.to(dtype).expand(B, N)
    w = v0.to(dtype).expand(B, N)
    i = i0.to(dtype).expand(B, N, S)
    # Contiguous, as Rockpool's batched state is: the recurrent product then reads the same layout.
    s = s0.to(dtype).expand(B, N).contiguous() if s0 is not None else input.new_zeros((B, N))
    spikes, vmem, isyn, irec, iahp = [], [], [], [], []
    for t in range(T):
        x_t = x[:, t]
        z_t = None if noise is None else noise[:, t].to(dtype)
        if lengths is not None:
            active = (t < lengths).reshape(B, 1)  # row b still runs at step t
            active3 = active.unsqueeze(2)
            x_t = torch.where(active3, x_t, torch.zeros_like(x_t))
            if z_t is not None:
                z_t = torch.where(active, z_t, torch.zeros_like(z_t))
            w_kept, i_kept, s_kept = w.expand(B, N), i.expand(B, N, S), s
            h_kept = h if ahp else None
        i = i + x_t
        if w_rec is not None:
            r = F.linear(s, w_rec.T).reshape(B, N, S)
            i = i + r
        i = i * beta
        lanes = i
        if ahp:  # the AHP current, fed by the previous spikes: the last lane of the sum (SPEC §9)
            h = (h + s * w_ahp) * gamma
            lanes = torch.cat((i, h.reshape(B, N, 1)), 2)
        w = w * alpha
        u = w + (lanes.sum(2) if synapse_sum is None else synapse_sum(lanes))
        s, w = _fire(u, z_t, bias, threshold, spike_generation_fn, learning_window, max_spikes_per_dt)
        if lengths is None:
            spikes.append(s)
            if ahp:
                # One node for the state's two uses (the recurrence and the AHP current), as the
                # torch.where below makes with lengths: autograd then adds the same terms in the same
                # order with and without lengths.
                s = s.view_as(s)
        else:
            spikes.append(torch.where(active, s, torch.zeros_like(s)))
            w = torch.where(active, w, w_kept)
            i = torch.where(active3, i, i_kept)
            s = torch.where(active, s, s_kept)
            if ahp:
                h = torch.where(active, h, h_kept)
        if record and lengths is None:
            vmem.append(w)
            isyn.append(i)
            irec.append(r if w_rec is not None else torch.zeros_like(i))
            if ahp:
                iahp.append(h)
        elif record:
            vmem.append(torch.where(active, w, w.detach()))
            isyn.append(torch.where(active3, i, i.detach()))
            irec.append(torch.where(active3, r, torch.zeros_like(r)) if w_rec is not None else torch.zeros_like(i))
            if ahp:
                iahp.append(torch.where(active, h, h.detach()))
    s_final = s.expand(B, N).clone()
    if T == 0:
        empty = input.new_empty((B, 0, N))
        rec = [empty.clone(), input.new_empty((B, 0, N, S)), input.new_empty((B, 0, N, S))] if record else [None] * 3
        if ahp:
            return (empty.to(io_dtype), *rec, empty.clone() if record else None, w.clone(), i.clone(), s_final,
                    h.clone())
        return (empty.to(io_dtype), *rec, w.clone(), i.clone(), s_final)
    spikes = torch.stack(spikes, dim=1).to(io_dtype)
    if record:
        rec = [torch.stack(vmem, dim=1), torch.stack(isyn, dim=1), torch.stack(irec, dim=1)]
    else:
        rec = [None, None, None]
    if ahp:
        return (spikes, *rec, torch.stack(iahp, dim=1) if record else None, w, i, s_final, h)
    return (spikes, *rec, w, i, s_final)


def adaptive_evolve_reference(input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt, dt, noise=None,
                              learning_window=0.5, max_spikes_per_dt=2.0**16, spike_generation_fn=StepPWL,
                              record=False, lengths=None):
    """Evolve adaptive-threshold LIF neurons (SPEC §10) over input (B,T,N) from membrane v0 and
    adaptation b0 ((B,N) or (N,) each).

    tau_mem, threshold, bias, tau_adapt, beta_adapt are (N,) or (). Each step, in SPEC §10's order:
    u = (((alpha * w) + I) + z) + bias; A = thr + (beta_adapt * b); s = spike_fn(u, A);
    w = u - (s * A); b = (rho * b) + (q * s), rho = exp(-dt/tau_adapt), q = 1 - rho. noise: the
    exact (B,T,N) term or None. lengths as lif_evolve_reference's (masking: on padding the input and
    noise are 0, spikes 0, the state holds, the records there are the held state detached).
    float16/bfloat16 input is computed in float32, spikes returned in its dtype.
    Returns (spikes (B,T,N), vmem (B,T,N), adapt (B,T,N) (records: None unless record), final
    membrane (B,N), final adaptation (B,N)).
    """
    io_dtype = input.dtype
    if io_dtype in (torch.float16, torch.bfloat16):
        input = input.float()
    dtype = input.dtype
    B, T, N = input.shape
    tau_mem, threshold, bias, tau_adapt, beta_adapt = (
        p.to(dtype) for p in (tau_mem, threshold, bias, tau_adapt, beta_adapt)
    )
    alpha = tau_to_decay(dt, tau_mem)
    rho = tau_to_decay(dt, tau_adapt)
    q = 1 - rho
    w = v0.to(dtype).expand(B, N)
    b = b0.to(dtype).expand(B, N)
    spikes, vmem, adapt = [], [], []
    for t in range(T):
        x_t, z_t, active = _step_inputs(input, noise, t, lengths, dtype)
        u = alpha * w + x_t
        if z_t is not None:
            u = u + z_t
        u = u + bias
        A = threshold + beta_adapt * b
        s = spike_generation_fn.apply(u, A, learning_window, max_spikes_per_dt)
        if lengths is not None:
            # Masked before its three uses (reset, adaptation, output), so that autograd adds their
            # gradients in the same order with and without lengths.
            s = torch.where(active, s, torch.zeros_like(s))
        w_new = u - s * A
        b_new = rho * b + q * s
        if lengths is None:
            w, b = w_new, b_new
        else:
            w = torch.where(active, w_new, w.expand(B, N))
            b = torch.where(active, b_new, b.expand(B, N))
        spikes.append(s)
        if record:
            vmem.append(w)
            adapt.append(b)
    if T == 0:
        empty = input.new_empty((B, 0, N))
        rec = (empty.clone(), empty.clone()) if record else (None, None)
        return (empty.to(io_dtype), *rec, w.clone(), b.clone())
    spikes = torch.stack(spikes, dim=1).to(io_dtype)
    rec = (None, None)
    if record:
        rec = (torch.stack(vmem, dim=1), torch.stack(adapt, dim=1))
        if lengths is not None:
            # Padding holds the state (detached there: gradients arriving on padding are ignored),
            # cut after the loop so that each state's uses are made in the same order as without
            # lengths (and autograd adds their gradients in the same order).
            active = (torch.arange(T, device=input.device) < lengths.unsqueeze(1)).unsqueeze(2)
            rec = tuple(torch.where(active, r, r.detach()) for r in rec)
    return (spikes, *rec, w, b)
