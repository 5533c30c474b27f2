#!/usr/bin/env bash
# Compile-checks every CUDA source without a GPU (../shared/BUILD.md, "CUDA code without a GPU"):
#   1. csrc/core/ and the per-thread code (csrc/cuda/*_thread.h) alone: every host/device function
#      instantiated in a __global__ kernel, for each float type (seconds).
#   2. each csrc/cuda/*.cu against the installed (CPU) torch's headers, with a stub for the one
#      header the CPU wheel lacks (c10/cuda/impl/cuda_cmake_macros.h), compiled (no link) with the
#      flags setup.py gives nvcc, for sm_80 and sm_90.
#   3. ptxas's resource usage of csrc/cuda/lif.cu, adaptive.cu and synaptic.cu: no LIF or adaptive
#      forward kernel, and no LIF or synaptic backward kernel, may use a stack frame (local memory):
#      the in-kernel noise is drawn a Philox block at a time with constant lane indices (a dynamic
#      index into a block's words puts it in local memory); the backward's loads ahead and its
#      gradient sums stay in registers. (The synaptic forward for S known only at run time keeps
#      its synapse sum's lane array there.)
# Every nvcc warning is an error (--Werror all-warnings): a call from device code to a host-only
# function is only a warning (#20011-D / #20014-D) otherwise, and nvcc would still "succeed".
# Any other line with "warning" in the log fails the check too (e.g. a host-compiler warning).
#
# Usage (from anywhere): .ci/check_cuda.sh      env: PYTHON (default .venv/bin/python), NVCC,
# CUDA_HOME (default /usr/local/cuda), LIF_CHECK_ARCHS (default "80 90"), KEEP=1 keeps the temp dir.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
NVCC=${NVCC:-${CUDA_HOME:-/usr/local/cuda}/bin/nvcc}
ARCHS=${LIF_CHECK_ARCHS:-"80 90"}

fail() { echo "check_cuda: FAIL: $*" >&2; exit 1; }

[ -x "$NVCC" ] || fail "nvcc not found at $NVCC (set NVCC or CUDA_HOME)"
command -v "$PYTHON" >/dev/null 2>&1 || [ -x "$PYTHON" ] || fail "python not found: $PYTHON (set PYTHON)"
shopt -s nullglob
SOURCES=(csrc/cuda/*.cu)
[ ${#SOURCES[@]} -gt 0 ] || fail "no csrc/cuda/*.cu files"

# The bit-exactness flags (SPEC §1) must stay in setup.py's nvcc flags.
# (Comment lines aside: they may name the flag to forbid it.)
SETUP_CODE=$(grep -v '^[[:space:]]*#' setup.py)
grep -q -- '"-fmad=false"' <<<"$SETUP_CODE" || fail "setup.py no longer passes -fmad=false to nvcc"
if grep -q -- 'use_fast_math' <<<"$SETUP_CODE"; then fail "setup.py passes --use_fast_math (SPEC §1 forbids it)"; fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lif_check_cuda.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "check_cuda: temp dir $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi

# Torch's include dirs, Python's, the C++ standard and ABI torch's own extension builder would use.
"$PYTHON" - >"$TMP/torch_flags" <<'PY'
import inspect, sysconfig
import torch
import torch.utils.cpp_extension as ce
flags = ["-I" + p for p in ce.include_paths()] + ["-I" + sysconfig.get_paths()["include"]]
std = "c++20" if "c++20" in inspect.getsource(ce) else "c++17"
flags += ["-std=" + std, "-D_GLIBCXX_USE_CXX11_ABI=%d" % int(torch._C._GLIBCXX_USE_CXX11_ABI)]
flags += list(ce.COMMON_NVCC_FLAGS)
print("\n".join(flags))
PY
mapfile -t TORCH_FLAGS <"$TMP/torch_flags"

mkdir -p "$TMP/stub/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$TMP/stub/c10/cuda/impl/cuda_cmake_macros.h"

GENCODE=()
for a in $ARCHS; do GENCODE+=(-gencode "arch=compute_$a,code=sm_$a"); done
# As setup.py (extensions()): -O3, no contraction, never fast-math.
NVCC_FLAGS=(-O3 -fmad=false --expt-relaxed-constexpr -Xcompiler -ffp-contract=off -Xcompiler -fPIC
            --Werror all-warnings -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C)

# 1. The math header and the per-thread loops alone, every function instantiated on the device.
cat >"$TMP/core_check.cu" <<'CU'
#include "core/adaptive.h"
#include "core/grad_sums.h"
#include "core/lif.h"
#include "core/philox.h"
#include "core/synaptic.h"
#include "cuda/adaptive_thread.h"
#include "cuda/lif_thread.h"
#include "cuda/synaptic_thread.h"

template <typename T>
__global__ void core_check(const T* in, T* out, uint64_t seed) {
  T u, w, W = in[9], gt = 0, ga = 0, gb = 0;
  out[0] = lif::step_forward(in[0], in[1], in[2], in[3], in[4], in[5], u, w);
  out[1] = lif::step_forward(in[0], in[1], in[2], in[6], in[3], in[4], in[5], u, w);
  out[2] = lif::step_backward<lif::kStepPWL>(in[0], in[1], in[2], in[3], in[4], in[5], in[6],
                                             in[7], W, gt, ga, gb);
  out[3] = lif::step_backward<lif::kPeriodicExponential>(in[0], in[1], in[2], in[3], in[4], in[5],
                                                         in[6], in[7], W, gt, ga, gb);
  out[4] = lif::recompute_w(in[0], in[1], in[2]);
  out[5] = u + w + W + gt + ga + gb;
  const lif::Normals4 nz = lif::philox_normals4(seed, seed + 1, threadIdx.x, blockIdx.x);
  out[6] = lif::scale_noise(in[8], nz.z0) + lif::scale_noise(in[8], nz.z3);
  const lif::NeuronConsts<T> c = lif::neuron_consts(in[0], in[1], in[2], in[3]);
  const T s = lif::spikes(in[4], c.thr, c.max_spikes);
  out[7] = lif::step_backward<lif::kStepPWL>(in[5], in[6], in[4], s, lif::reset(in[4], s, c.thr), c,
                                             W, gt, ga, gb);
  out[8] = lif::step_backward<lif::kPeriodicExponential>(in[5], in[6], in[4], s, in[7], c, W, gt,
                                                         ga, gb);
  out[9] = lif::lif_exp(in[0]) + lif::lif_floor(in[1]) + lif::lif_abs(in[2]) +
           static_cast<T>(lif::host_expf(static_cast<float>(in[3])));
}

// Every per-thread function of the CUDA kernels, on the device, for one variant each.
template <typename IT, typename T, int NOISE, int SAVE, bool RECORD, int SURR, bool HAS_GW, bool MASK>
__global__ void thread_check(lif::LifForwardArgs<IT, T> f, lif::LifBackwardArgs<IT, T> b,
                             lif::SynForwardArgs<IT, T> sf, lif::SynBackwardArgs<IT, T> sb,
                             lif::GradSum<T> g) {
  lif::gpu::forward_thread<IT, T, NOISE, SAVE, RECORD>(f, threadIdx.x);
  lif::gpu::backward_thread<IT, T, SURR, HAS_GW, MASK>(b, threadIdx.x);
  // The adaptive model keeps u and b (no window mask): it saves where SAVE is not kSaveNone.
  lif::AdaptiveForwardArgs<IT, T> af{};
  af.lif = f;
  lif::gpu::adaptive_forward_thread<IT, T, NOISE, SAVE != lif::kSaveNone, RECORD>(af, threadIdx.x);
  lif::AdaptiveBackwardArgs<IT, T> ab{};
  ab.lif = b;
  lif::gpu::adaptive_backward_thread<IT, T, SURR, HAS_GW, !HAS_GW>(ab, threadIdx.x);
  // With and without the AHP current (SPEC §9), as RECORD and HAS_GW vary; both CUDA sum orders.
  lif::gpu::syn_forward_thread<IT, T, NOISE, 0, RECORD, lif::kCudaSumDown>(sf, threadIdx.x);
  lif::gpu::syn_forward_thread<IT, T, NOISE, 0, RECORD, lif::kCudaSumUp>(sf, threadIdx.x);
  lif::gpu::syn_backward_thread<IT, T, SURR, 2, HAS_GW>(sb, threadIdx.x);
  lif::grad_sum_batch(g, 3, threadIdx.x);
  lif::grad_sum_neurons(g, threadIdx.x);
  int64_t done[4];
  const auto add = [](int64_t c, int64_t n) { return c + n; };
  lif::grad_sum_batch_tile(g, 3, 5, lif::grad_tiles_completed(0, threadIdx.x, 3, 5, add, done), 0, 1);
}

// The synaptic model's step functions (SPEC §7), both synapse-sum orders included, on the device.
template <typename T>
__global__ void syn_core_check(const T* in, T* out) {
  T I = in[5], gb = 0;
  out[0] = lif::syn_decay(lif::syn_input(in[0], in[1], in[2]), in[3]) + lif::syn_input(in[0], in[1]);
  T u, w;  // the synaptic neuron's step is the LIF step_forward
  out[1] = lif::step_forward(in[0], in[1], in[2], in[3], in[4], in[5], T(2), u, w) + u + w;
  out[2] = lif::cpu_torch_sum(in, threadIdx.x) + lif::cuda_torch_sum<true>(in, threadIdx.x, 9) +
           lif::cuda_torch_sum<false>(in, threadIdx.x, 9);
  out[3] = lif::synaptic_sum<lif::kCudaSumDown, 4>(in, 4, 1) +
           lif::synaptic_sum<lif::kCudaSumUp, 4>(in, 4, 1) +
           lif::synaptic_sum<lif::kCpuSum, 0>(in, 7, 1);
  out[4] = lif::syn_step_backward(in[0], in[1], in[2], I, gb) + I + gb;
  out[5] = lif::ahp_sum<lif::kCudaSumDown, 0>(in, threadIdx.x, in[8], 9) +
           lif::ahp_sum<lif::kCudaSumUp, 0>(in, threadIdx.x, in[8], 9) +
           lif::ahp_sum<lif::kCudaSumDown, 2>(in, 2, in[8], 9) +
           lif::ahp_sum<lif::kCpuSum, 0>(in, 7, in[8], 1);
}

// The adaptive model's step functions (SPEC §10), on the device.
template <typename T>
__global__ void adaptive_core_check(const T* in, T* out) {
  T w, b = in[6], A;
  out[0] = lif::adaptive_fire(in[0], in[1], in[2], in[3], in[4], in[5], w, b) + w + b;
  const lif::AdaptiveConsts<T> c{in[0], in[1], in[2], in[3], in[4], in[5], in[6]};
  lif::AdaptiveGrads<T> g{in[7], in[8], 0, 0, 0, 0, 0};
  const T s = lif::adaptive_spikes(in[0], in[1], in[2], in[3], in[4], A);
  out[1] = lif::adaptive_step_backward<lif::kStepPWL>(in[0], in[1], in[2], in[3], s, A, in[4],
                                                      in[5], c, g);
  out[2] = lif::adaptive_step_backward<lif::kPeriodicExponential>(in[0], in[1], in[2], in[3], s, A,
                                                                  in[4], in[5], c, g);
  out[3] = g.W + g.Bc + g.g_alpha + g.g_thr + g.g_bias + g.g_beta + g.g_rho;
}

template __global__ void adaptive_core_check<float>(const float*, float*);
template __global__ void adaptive_core_check<double>(const double*, double*);

template __global__ void syn_core_check<float>(const float*, float*);
template __global__ void syn_core_check<double>(const double*, double*);
template __global__ void core_check<float>(const float*, float*, uint64_t);
template __global__ void core_check<double>(const double*, double*, uint64_t);
using lif::kPeriodicExponential;
using lif::kStepPWL;
using lif::kNoiseKernel;
using lif::kNoiseTensor;
using lif::kNoNoise;
using lif::kSaveMask;
using lif::kSaveNone;
using lif::kSaveU;
template __global__ void thread_check<float, float, kNoNoise, kSaveU, true, kStepPWL, true, false>(
    lif::LifForwardArgs<float, float>, lif::LifBackwardArgs<float, float>, lif::SynForwardArgs<float, float>,
    lif::SynBackwardArgs<float, float>, lif::GradSum<float>);
template __global__ void thread_check<float, float, kNoiseKernel, kSaveMask, false, kPeriodicExponential, false, false>(
    lif::LifForwardArgs<float, float>, lif::LifBackwardArgs<float, float>, lif::SynForwardArgs<float, float>,
    lif::SynBackwardArgs<float, float>, lif::GradSum<float>);
template __global__ void thread_check<double, double, kNoiseTensor, kSaveU, false, kPeriodicExponential, true, false>(
    lif::LifForwardArgs<double, double>, lif::LifBackwardArgs<double, double>, lif::SynForwardArgs<double, double>,
    lif::SynBackwardArgs<double, double>, lif::GradSum<double>);
template __global__ void thread_check<double, double, kNoiseKernel, kSaveMask, true, kStepPWL, false, true>(
    lif::LifForwardArgs<double, double>, lif::LifBackwardArgs<double, double>, lif::SynForwardArgs<double, double>,
    lif::SynBackwardArgs<double, double>, lif::GradSum<double>);
CU

status=0
compile() {  # name, log, nvcc args...
  local name=$1 log=$2; shift 2
  local t0=$SECONDS rc=0
  "$NVCC" "$@" >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    echo "check_cuda: FAIL $name (nvcc exit $rc, $((SECONDS - t0)) s):"; cat "$log"; return 1
  fi
  if grep -qi 'warning' "$log"; then
    echo "check_cuda: FAIL $name (warnings, $((SECONDS - t0)) s):"; cat "$log"; return 1
  fi
  echo "check_cuda: ok   $name ($((SECONDS - t0)) s)"
}

# Header-only includes for step 1: nothing from the tensor library.
compile "csrc/core/ + csrc/cuda/*_thread.h (device instantiation)" "$TMP/core_check.log" \
  -c "${GENCODE[@]}" "${NVCC_FLAGS[@]}" "${TORCH_FLAGS[@]}" -Icsrc \
  "$TMP/core_check.cu" -o "$TMP/core_check.o" || status=1

# 2. The torch-facing sources, in parallel (one job per source; each takes ~1 GB and ~40 s).
pids=()
for src in "${SOURCES[@]}"; do
  obj="$TMP/$(basename "$src").o"
  usage=()
  case "$(basename "$src")" in lif.cu | adaptive.cu | synaptic.cu) usage=(--resource-usage) ;; esac
  compile "$src (sm ${ARCHS// /, sm })" "$obj.log" -c "${GENCODE[@]}" "${NVCC_FLAGS[@]}" "${usage[@]}" \
    -I"$TMP/stub" "${TORCH_FLAGS[@]}" -Icsrc "$src" -o "$obj" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || status=1; done

# 3. Kernels without a stack frame (ptxas: "N bytes stack frame" after each entry), in every
#    source whose resource usage was asked for: lif.cu's forward and backward kernels, adaptive.cu's
#    forward ones, synaptic.cu's backward ones.
for KSRC in lif.cu adaptive.cu synaptic.cu; do
  KLOG="$TMP/$KSRC.o.log"
  case "$KSRC" in
    lif.cu) KINDS="forward_kernel|backward_kernel" ;;
    adaptive.cu) KINDS=forward_kernel ;;
    synaptic.cu) KINDS=backward_kernel ;;
  esac
  if [ ! -f "$KLOG" ]; then
    echo "check_cuda: FAIL no ptxas log of $KSRC: the stack-frame check did not run"; status=1; continue
  fi
  read -r nfwd nbad <<<"$(awk -v kinds="$KINDS" '/Compiling entry function/ { fwd = ($0 ~ kinds) }
    /bytes stack frame/ && fwd { n++; if ($1 != 0) { bad++; print "check_cuda: stack frame: " $0 > "/dev/stderr" } fwd = 0 }
    END { print n + 0, bad + 0 }' "$KLOG")"
  if [ "$nfwd" -eq 0 ]; then
    echo "check_cuda: FAIL no ${KINDS//|/ or } found in $KSRC's ptxas resource usage"; status=1
  elif [ "$nbad" -ne 0 ]; then
    echo "check_cuda: FAIL $nbad of $nfwd kernels ($KINDS) of $KSRC use a stack frame (local memory)"; status=1
  else
    echo "check_cuda: ok   none of the $nfwd kernels ($KINDS) of $KSRC (every variant, sm ${ARCHS// /, sm }) uses a stack frame"
  fi
done

if [ $status -ne 0 ]; then fail "CUDA compile check failed (see above)"; fi
echo "check_cuda: all CUDA sources compile cleanly for sm ${ARCHS// /, sm } ($SECONDS s)"
