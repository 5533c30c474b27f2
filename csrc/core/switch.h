// Runtime flag -> template parameter, the one idiom for both devices (after mamba's
// static_switch.h): the body is a lambda that sees NAME as a constant expression. The surrogate's
// switch lives beside its enum (surrogate.h).
//
//   BOOL_SWITCH(a.vmem_out != nullptr, RECORD, [&] { kernel<RECORD>(a); });
#pragma once

#define BOOL_SWITCH(COND, NAME, ...) \
  [&] {                              \
    if (COND) {                      \
      constexpr bool NAME = true;    \
      return __VA_ARGS__();          \
    } else {                         \
      constexpr bool NAME = false;   \
      return __VA_ARGS__();          \
    }                                \
  }()

// NoiseMode (args.h) -> constexpr int NAME.
#define NOISE_SWITCH(MODE, NAME, ...)           \
  [&] {                                         \
    if ((MODE) == ::lif::kNoiseTensor) {        \
      constexpr int NAME = ::lif::kNoiseTensor; \
      return __VA_ARGS__();                     \
    } else if ((MODE) == ::lif::kNoiseKernel) { \
      constexpr int NAME = ::lif::kNoiseKernel; \
      return __VA_ARGS__();                     \
    } else {                                    \
      constexpr int NAME = ::lif::kNoNoise;     \
      return __VA_ARGS__();                     \
    }                                           \
  }()

// Synapses per neuron -> constexpr int NAME: 1 or 2 (the common layers, no loop over k), else 0
// (any S, known at run time).
#define SYNAPSES_SWITCH(S, NAME, ...) \
  [&] {                               \
    if ((S) == 1) {                   \
      constexpr int NAME = 1;         \
      return __VA_ARGS__();           \
    } else if ((S) == 2) {            \
      constexpr int NAME = 2;         \
      return __VA_ARGS__();           \
    } else {                          \
      constexpr int NAME = 0;         \
      return __VA_ARGS__();           \
    }                                 \
  }()

// Save (mask.h) -> constexpr int NAME.
#define SAVE_SWITCH(MODE, NAME, ...)         \
  [&] {                                      \
    if ((MODE) == ::lif::kSaveMask) {        \
      constexpr int NAME = ::lif::kSaveMask; \
      return __VA_ARGS__();                  \
    } else if ((MODE) == ::lif::kSaveU) {    \
      constexpr int NAME = ::lif::kSaveU;    \
      return __VA_ARGS__();                  \
    } else {                                 \
      constexpr int NAME = ::lif::kSaveNone; \
      return __VA_ARGS__();                  \
    }                                        \
  }()
