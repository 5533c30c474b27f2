// The CPU kernels (lif_kernel_cpu.cpp) on the raw-pointer arguments of lif_args.h.
#pragma once

#include "../lif_args.h"

namespace lif {
namespace cpu {

template <typename IT, typename T>
void forward(const ForwardArgs<IT, T>& a);
template <typename IT, typename T>
void backward(const BackwardArgs<IT, T>& a);

}  // namespace cpu
}  // namespace lif
