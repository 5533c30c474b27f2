// The CPU kernels of the synaptic LIF model (synaptic_kernel_cpu.cpp, SPEC §7) on the raw-pointer
// arguments of synaptic_args.h.
#pragma once

#include "../synaptic_args.h"

namespace lif {
namespace cpu {

template <typename IT, typename T>
void syn_forward(const SynForwardArgs<IT, T>& a);
template <typename IT, typename T>
void syn_backward(const SynBackwardArgs<IT, T>& a);
// The parameter-gradient sums (and a shared state's), in the fixed order of SynGradSum.
template <typename T>
void syn_grad_sums(const SynGradSum<T>* sums, int count, int64_t B);

}  // namespace cpu
}  // namespace lif
