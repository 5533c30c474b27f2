// Schemas of the lif_cuda ops, defined once. Device implementations register themselves with
// TORCH_LIBRARY_IMPL in csrc/cpu/ and csrc/cuda/; autograd and fake kernels live in lif_cuda/ops.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import lif_cuda._C` loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lif_cuda, m) {
  // Forward over the whole sequence (SPEC §1). Returns (spikes, vmem_record, final_state, u):
  // vmem_record is empty unless `record`; u (pre-spike membrane, the one tensor backward needs)
  // is empty unless `save_u`. Noise (SPEC §4): either the exact (B,T,N) term `noise`, or drawn in
  // the kernel, noise_scale * N(0,1), from Philox keyed by `noise_key` = CPU int64 (seed, offset).
  // input may be float16/bfloat16: then v0, parameters, noise, the state and math are float32,
  // spikes are in the input's dtype. `window` and `surrogate` are not used by the forward; they are here so
  // that the autograd formula (lif_cuda/ops.py) finds everything the backward needs in the inputs.
  m.def(
      "lif_forward(Tensor input, Tensor v0, Tensor alpha, Tensor threshold, Tensor bias, "
      "Tensor? noise, Tensor? noise_key, float noise_scale, float window, float max_spikes, "
      "int surrogate, bool record, bool save_u) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Backward through time (SPEC §3). Returns (grad_input, grad_v0, grad_alpha, grad_threshold,
  // grad_bias); the parameter gradients are summed over the batch. grad_input is also the noise's.
  m.def(
      "lif_backward(Tensor grad_spikes, Tensor? grad_vmem, Tensor? grad_vfinal, Tensor u, "
      "Tensor v0, Tensor alpha, Tensor threshold, float window, float max_spikes, int surrogate) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
