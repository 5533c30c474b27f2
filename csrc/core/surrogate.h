// The surrogate gradients of the spike function (SPEC §2). A surrogate is its enum value, its
// SurrogateGrad specialisation below and its Python class (lif_cuda/surrogates.py): nothing else.
// The kernels take it as a template parameter (SURROGATE_SWITCH), so the hot loop never branches.
#pragma once

#include "hd.h"

namespace lif {

enum Surrogate : int { kStepPWL = 0, kPeriodicExponential = 1 };
constexpr int kNumSurrogates = 2;

// Runtime surrogate id -> constexpr int SURR in the body (both devices; see switch.h).
#define SURROGATE_SWITCH(ID, SURR, ...)                 \
  [&] {                                                 \
    if ((ID) == ::lif::kPeriodicExponential) {          \
      constexpr int SURR = ::lif::kPeriodicExponential; \
      return __VA_ARGS__();                             \
    } else {                                            \
      constexpr int SURR = ::lif::kStepPWL;             \
      return __VA_ARGS__();                             \
    }                                                   \
  }()

// Per-neuron constants of the backward, computed once per neuron (not per step): the surrogates
// multiply by 1/thr instead of dividing (the backward is checked against tolerances, not bits; the
// spike count it recomputes still uses the true division of the forward).
template <typename T>
struct NeuronConsts {
  T alpha, thr, inv_thr, inv_thr2, pwl_lo, window, max_spikes;
};

template <typename T>
LIF_HD NeuronConsts<T> neuron_consts(T alpha, T thr, T window, T max_spikes) {
  NeuronConsts<T> c;
  c.alpha = alpha;
  c.thr = thr;
  c.inv_thr = T(1) / thr;
  c.inv_thr2 = T(1) / (thr * thr);
  c.pwl_lo = thr - window;  // rounded as the reference rounds `threshold - window`
  c.window = window;
  c.max_spikes = max_spikes;
  return c;
}

// Both give ds/du and ds/dthr times the upstream gradient g on s; the clamp to M is ignored except
// in PeriodicExponential's own definition of k.
template <int SURR, typename T>
struct SurrogateGrad;

// StepPWL: ds/du = m/thr, ds/dthr = -u*m/thr^2, m = (u >= thr - window). The mask multiplies (as
// the reference does) so that NaN/Inf propagate the same way.
template <typename T>
struct SurrogateGrad<kStepPWL, T> {
  LIF_HD static void apply(T g, T u, const NeuronConsts<T>& c, T& d_u, T& d_thr) {
    T m = (u >= c.pwl_lo) ? T(1) : T(0);
    d_u = (g * c.inv_thr) * m;
    d_thr = ((-u * g) * c.inv_thr2) * m;
  }
};

// PeriodicExponential: pdf(u) with vs = u - thr/2, k = min(floor(vs/thr), M-1), vp = vs - k*thr,
// vn = (u < thr) ? vs : vp, pdf = exp(-|vn - thr/2| / window) / thr.
template <typename T>
struct SurrogateGrad<kPeriodicExponential, T> {
  LIF_HD static void apply(T g, T u, const NeuronConsts<T>& c, T& d_u, T& d_thr) {
    T half = c.thr / T(2);
    T vs = u - half;
    T k = lif_floor(vs / c.thr);
    T kmax = c.max_spikes - T(1);
    k = (k > kmax) ? kmax : k;
    T vp = vs - k * c.thr;
    T vn = (u < c.thr) ? vs : vp;
    T pdf = lif_exp(-lif_abs(vn - half) / c.window) * c.inv_thr;
    d_u = g * pdf;
    d_thr = (-(g * pdf) * u) * c.inv_thr;
  }
};

}  // namespace lif
