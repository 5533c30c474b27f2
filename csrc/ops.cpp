// Schemas of the lif_cuda ops, defined once. Device implementations register themselves with
// TORCH_LIBRARY_IMPL in csrc/cpu/ and csrc/cuda/, the Autograd kernels in csrc/autograd.cpp; fake
// (meta) kernels live in lif_cuda/ops.py.
#include <Python.h>
#include <torch/library.h>

#include "host/output_pool.h"
#include "host/prepare.h"

namespace {

// lif_cuda._C.kernel_launches(): kernels launched so far (see host/prepare.h), for the tests.
PyObject* kernel_launches(PyObject* /*self*/, PyObject* /*args*/) {
  return PyLong_FromLongLong(lif::g_kernel_launches.load());
}

PyObject* pool_stats_dict(const lif::OutputPoolStats& s) {
  return Py_BuildValue("{s:L,s:L,s:L,s:L}", "limit_bytes", static_cast<long long>(s.limit_bytes),
                       "held_bytes", static_cast<long long>(s.held_bytes), "hits",
                       static_cast<long long>(s.hits), "misses", static_cast<long long>(s.misses));
}

// lif_cuda._C.output_pool(limit_bytes=None): the CPU output pool's stats, after setting its limit.
PyObject* output_pool(PyObject* /*self*/, PyObject* args) {
  PyObject* limit = Py_None;
  if (!PyArg_ParseTuple(args, "|O", &limit)) return nullptr;
  if (limit == Py_None) return pool_stats_dict(lif::output_pool_stats());
  const long long bytes = PyLong_AsLongLong(limit);
  if (bytes == -1 && PyErr_Occurred()) return nullptr;
  return pool_stats_dict(lif::set_output_pool_limit(bytes));
}

#define LIF_STRINGIFY2(x) #x
#define LIF_STRINGIFY(x) LIF_STRINGIFY2(x)

// lif_cuda._C.torch_version(): the torch this library was built against (setup.py).
PyObject* torch_version(PyObject* /*self*/, PyObject* /*args*/) {
  return PyUnicode_FromString(LIF_STRINGIFY(LIF_TORCH_VERSION));
}

PyMethodDef methods[] = {
    {"kernel_launches", kernel_launches, METH_NOARGS, "Kernel launches since the library loaded."},
    {"torch_version", torch_version, METH_NOARGS, "The torch version this library was built for."},
    {"output_pool", output_pool, METH_VARARGS,
     "The CPU output pool: stats, optionally a new limit."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
// `import lif_cuda._C` loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lif_cuda, m) {
  // Forward over the whole sequence (SPEC §1). Returns (spikes, vmem_record, final_state, u,
  // v0_saved): vmem_record is empty unless `record`; u (the pre-spike membrane, the sequence the
  // backward needs) and v0_saved (a copy of v0 as the forward read it: a module updates its state
  // in place right after the call) are empty unless `save_u`, which the autograd kernel sets
  // whenever a gradient is needed. Both come out of the op so that torch.compile saves them as they
  // are (it would turn a copy made outside the op back into the mutated input). With `save_mask`
  // too, u is the window mask instead, (B, ceil(T/32), N) int32 words (core/mask.h, SPEC §11):
  // what a StepPWL backward needs when neither tau_mem nor threshold needs a gradient (the
  // autograd kernel decides); lif_backward takes it in u's place, and v0_saved is then empty
  // (that backward reads no v0: give it any tensor of v0's shape).
  // In-kernel noise (noise_scale > 0, no noise tensor) takes its Philox key from `noise_key`, or,
  // when that is None, draws it from torch's default CPU generator at run time (under CUDA graph
  // capture the kernel reads it from the CUDA generator's graph-safe state instead:
  // cuda/launch.h): hence the tag, which keeps torch.compile from merging or reordering two
  // calls. v0 is (B,N), or (N,) for one
  // state shared by every row; tau_mem, threshold, bias are (N,) or
  // (). alpha = exp(-dt/tau_mem) is computed inside, as torch computes it. Noise (SPEC §4): either
  // the exact (B,T,N) term `noise`, or drawn in the kernel, noise_scale * N(0,1), from Philox keyed
  // by `noise_key` = CPU int64 (seed, offset). input may be float16/bfloat16: then v0, parameters,
  // noise, the state and math are float32, spikes are in the input's dtype. `surrogate` is not
  // used by the forward; it is here so that the autograd formula finds everything it needs.
  // `lengths` (SPEC §8): int64 (B,) on the input's device, row b runs its first lengths[b] steps;
  // the rest is padding: spikes 0, the recorded membrane (and u) hold the row's last state, and
  // the final state is the state after lengths[b] steps (csrc/core/lengths.h). Values are checked
  // for a CPU tensor (0 <= lengths[b] <= T); the kernels clamp what they read to [0, T].
  // `decays` (every op, Rockpool's leak_mode "decays"): tau_mem (and tau_syn) hold the decays alpha
  // (and beta) themselves, in [0, 1], used as they are; the backward then returns their gradients
  // (SPEC §3's galpha) where it returns a time constant's, and errors name them alpha and beta.
  m.def(
      "lif_forward(Tensor input, Tensor v0, Tensor tau_mem, Tensor threshold, Tensor bias, "
      "Tensor? noise, Tensor? noise_key, float dt, float noise_scale, float window, "
      "float max_spikes, int surrogate, bool record, bool save_u, Tensor? lengths=None, "
      "bool decays=False, bool save_mask=False) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  // Backward through time (SPEC §3). Returns (grad_input, grad_v0, grad_tau_mem, grad_threshold,
  // grad_bias), each in the shape of its forward argument (summed over the batch, and over the
  // neurons for a () parameter; `scalar_bias`: bias was ()). grad_input is also the noise's.
  // `lengths`: the forward's; row b's backward starts at lengths[b] - 1 from grad_vfinal, ignores
  // the upstream gradients on its padding and gives its padding a zero grad_input. From a window
  // mask in u's place, grad_tau_mem and grad_threshold are zeros (the mask cannot give them).
  m.def(
      "lif_backward(Tensor grad_spikes, Tensor? grad_vmem, Tensor? grad_vfinal, Tensor u, "
      "Tensor v0, Tensor tau_mem, Tensor threshold, float dt, float window, float max_spikes, "
      "int surrogate, bool scalar_bias, Tensor? lengths=None, bool decays=False) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The adaptive-threshold LIF (SPEC §10): lif_forward's arguments plus the initial adaptation b0
  // ((B,N) or (N,)) and the parameters tau_adapt, beta_adapt ((N,) or ()); rho = exp(-dt/tau_adapt)
  // is computed inside as torch computes it. Returns (spikes, vmem, adapt, v_final, b_final, u,
  // b_saved, v0_saved, b0_saved): the records vmem and adapt (B,T,N) are empty unless `record`;
  // u (B,T,N), b_saved and the copies of v0 and b0 empty unless `save` (set by the autograd kernel
  // when a gradient is needed). b_saved is what the device's backward reads (core/adaptive.h): on
  // CUDA the adaptation after each step (B,T,N), on the CPU checkpoints (B,ceil(T/32),N). Noise
  // and `lengths` as for lif_forward (on padding the records and u hold the row's last state).
  m.def(
      "adaptive_forward(Tensor input, Tensor v0, Tensor b0, Tensor tau_mem, Tensor threshold, "
      "Tensor bias, Tensor tau_adapt, Tensor beta_adapt, Tensor? noise, Tensor? noise_key, "
      "float dt, float noise_scale, float window, float max_spikes, int surrogate, bool record, "
      "bool save, Tensor? lengths=None) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  // Its backward (core/adaptive.h): returns (grad_input, grad_v0, grad_b0, grad_tau_mem,
  // grad_threshold, grad_bias, grad_tau_adapt, grad_beta_adapt), each in its forward argument's
  // shape (bias: () when `scalar_bias`); grad_input is also the noise's. `lengths` as for
  // lif_backward.
  m.def(
      "adaptive_backward(Tensor grad_spikes, Tensor? grad_vmem, Tensor? grad_adapt, "
      "Tensor? grad_vfinal, Tensor? grad_bfinal, Tensor u, Tensor b, Tensor v0, Tensor b0, "
      "Tensor tau_mem, Tensor threshold, Tensor tau_adapt, Tensor beta_adapt, float dt, "
      "float window, float max_spikes, int surrogate, bool scalar_bias, Tensor? lengths=None) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The synaptic LIF model (SPEC §7, Rockpool's LIFTorch): input (B,T,N*S) read as (B,T,N,S);
  // i0 (B,N,S) or (N,S) gives N and S; v0 (B,N) or (N,); s0 (B,N) or (N,) the spikes of the step
  // before the first (the recurrent product's first input; None: zeros); tau_mem, threshold, bias
  // (N,) or (); tau_syn (N,S), (1,S) or (); w_rec (N, N*S) or None (feed-forward: the whole time
  // loop in one kernel; recurrent: a C++ time loop, at::linear(s, w_rec.t()) then the fused step
  // kernel per step). alpha and beta are computed inside, as torch computes them; noise as for
  // lif_forward. Returns (spikes, vmem, isyn, irec, v_final, i_final, s_final, u, i_pre, v0_saved,
  // s0_saved): the records vmem (B,T,N), isyn, irec (B,T,N,S) are empty unless `record` (irec is
  // zeros without w_rec); u (B,T,N) and i_pre (B,T,N,S) (the currents before their decay), v0_saved
  // and s0_saved (copies of the initial state) are empty unless `save`, which the autograd kernel
  // sets when a gradient is needed. `lengths` (SPEC §8) as for lif_forward: row b runs its first
  // lengths[b] steps; on the rest spikes are 0, vmem and isyn (and u, i_pre) hold the row's state
  // after its last step, irec is 0, and the state is unchanged, so the final state (and s_final,
  // the last spikes) is the one after lengths[b] steps (csrc/core/lengths.h).
  // The AHP current (SPEC §9, Rockpool's aLIFTorch): w_ahp and tau_ahp ((N,) or ()) and h0 ((B,N)
  // or (N,)), all three or none; h = (h + s_prev * w_ahp) * exp(-dt/tau_ahp) is the last lane of
  // the synapse sum, s_prev being s0 (or zeros) at the first step. Then the last three outputs are
  // iahp (the record of h, (B,T,N), empty unless `record`), h_final (B,N) and h_pre (h before its
  // decay, (B,T,N), empty unless `save`); without it they are empty.
  // What `save` keeps (SPEC §11; the autograd kernel decides from what needs a gradient): with
  // `save_mask`, u is the window mask's (B, ceil(T/32), N) int32 words instead (core/mask.h; the
  // StepPWL surrogate, and neither tau_mem, threshold, w_rec nor w_ahp needs a gradient); without
  // `save_i_pre`, i_pre is (0, S) (only tau_syn's gradient reads it); without `save_h_pre`, h_pre
  // is empty (only tau_ahp's does). With `save_mask` and `save_counts` (max_spikes <= 255), a 15th
  // output keeps the spikes as (B,T,N) uint8 counts, which w_rec's and w_ahp's gradients read in
  // the mask's company; else it is empty. synaptic_backward takes them as they are (the counts as
  // `spike_counts`), and returns zeros for the gradients they cannot give.
  m.def(
      "synaptic_forward(Tensor input, Tensor v0, Tensor i0, Tensor? s0, Tensor tau_mem, "
      "Tensor tau_syn, Tensor threshold, Tensor bias, Tensor? w_rec, Tensor? noise, "
      "Tensor? noise_key, float dt, float noise_scale, float window, float max_spikes, "
      "int surrogate, bool record, bool save, Tensor? lengths=None, Tensor? w_ahp=None, "
      "Tensor? tau_ahp=None, Tensor? h0=None, bool decays=False, bool save_mask=False, "
      "bool save_i_pre=True, bool save_h_pre=True, bool save_counts=False) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::nondeterministic_seeded});
  // Its backward (SPEC §7): returns (grad_input, grad_v0, grad_i0, grad_s0, grad_tau_mem,
  // grad_tau_syn, grad_threshold, grad_bias, grad_w_rec, grad_noise), each in its forward
  // argument's shape (grad_i0 (N,S) when `i0_shared`; grad_s0 and grad_w_rec (0,) when there is no
  // s0 / w_rec; grad_noise (B,T,N) only when `noise_grad`). `lengths`: the forward's; row b's
  // reverse loop starts at its last step from the gradients on the final state, ignores the
  // upstream gradients on its padding and gives its padding zero grad_input (and grad_noise); its
  // padding adds nothing to the parameters' gradients, w_rec's included.
  // With the AHP current (h_pre, w_ahp, tau_ahp given: the forward's h_pre and parameters;
  // grad_iahp, grad_hfinal the upstream gradients on its record and final state; `h0_shared`: h0
  // was (N,)) the last three outputs are grad_h0, grad_w_ahp, grad_tau_ahp, and grad_s0 has the
  // AHP's share too; without it they are empty.
  m.def(
      "synaptic_backward(Tensor grad_spikes, Tensor? grad_vmem, Tensor? grad_isyn, "
      "Tensor? grad_irec, Tensor? grad_vfinal, Tensor? grad_ifinal, Tensor u, Tensor i_pre, "
      "Tensor v0, Tensor? s0, Tensor tau_mem, Tensor tau_syn, Tensor threshold, Tensor? w_rec, "
      "float dt, float window, float max_spikes, int surrogate, bool scalar_bias, bool i0_shared, "
      "bool noise_grad, Tensor? lengths=None, Tensor? grad_iahp=None, Tensor? grad_hfinal=None, "
      "Tensor? h_pre=None, Tensor? w_ahp=None, Tensor? tau_ahp=None, bool h0_shared=False, "
      "bool decays=False, Tensor? spike_counts=None) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor)");
  // SpikeLinear's input kept for its backward (SPEC §11, core/counts.h): pack_counts checks that
  // every value of `input` (float32/64, float16, bfloat16, any shape) is an integer count in
  // [0, max_count] (max_count in [1, 255]) and returns them in memory order as uint8, 8 to a byte
  // (bit j of byte i is element 8i + j) when max_count == 1, else one to a byte. A broken promise
  // is a ValueError naming max_count on the CPU; on CUDA a device-side assertion (no host sync).
  // unpack_counts returns the first `numel` counts of `packed` as a flat tensor of `dtype`.
  m.def("pack_counts(Tensor input, int max_count) -> Tensor");
  m.def("unpack_counts(Tensor packed, int max_count, int numel, ScalarType dtype) -> Tensor");
}
