// Storage formats of parameters, gradients and optimizer state (plain data, no kernels).
//
// A buffer in a reduced format is loaded as float32, updated in float32 and stored back
// through its format (fastoptim/formats/*.hpp); every optimizer kernel that takes these
// descriptors gets every format.
//
//   f32   float32
//   bf16  bfloat16 bits in a uint16 array (the top half of a float32)
//   f16   IEEE binary16 (parameters' low-precision copies and gradients only)
//   q8    8-bit blockwise dynamic quantization (optimizer state only): uint8 codes, one
//         per element, and one float32 absmax per block of kQ8Block elements; the value of
//         element i is map[code[i]] * absmax[i / kQ8Block], with bitsandbytes' signed
//         dynamic map for signed buffers (exp_avg) and its unsigned map for non-negative
//         ones (exp_avg_sq, max_exp_avg_sq). See formats/qmap.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace fastoptim {

enum class Format : std::uint8_t { f32 = 0, bf16 = 1, f16 = 2, q8 = 3 };
// How a value is rounded when stored in bf16: to nearest even, or stochastically (rounded
// up with probability equal to the fraction of the gap, unbiased in expectation).
enum class Rounding : std::uint8_t { nearest = 0, stochastic = 1 };

// Elements per absmax block of the q8 format (bitsandbytes' blocksize for optimizers).
constexpr std::size_t kQ8Block = 256;

// Whether the Adam format kernels may take their fused AVX-512 paths (kernels/adam_fused.hpp);
// false sends every combination the general way. Tests compare the two; nothing else
// changes it.
inline std::atomic<bool> fused_formats_enabled{true};

inline std::size_t q8_blocks(std::size_t n) { return (n + kQ8Block - 1) / kQ8Block; }

// One tensor of a multi-tensor Adam/AdamW update in any supported combination of formats.
//   param:       f32 (the master) or bf16, [n]
//   param_copy:  null, or a bf16 / f16 copy of an f32 param written in the same pass [n]
//   grad:        f32, bf16 or f16 [n], read only
//   exp_avg, exp_avg_sq, max_exp_avg_sq (null unless amsgrad): state_format, [n]
//   absmax_*:    q8 only: float32 [q8_blocks(n)], updated with the codes
//   seed:        key of this tensor's stochastic-rounding streams (element i of step t is
//                rounded with bits drawn from (seed, t, buffer, i))
struct FormatAdamTensor {
    void* param;
    void* param_copy;
    const void* grad;
    void* exp_avg;
    void* exp_avg_sq;
    void* max_exp_avg_sq;
    float* absmax_exp_avg;
    float* absmax_exp_avg_sq;
    float* absmax_max_exp_avg_sq;
    std::uint64_t seed;
    std::size_t n;
    Format param_format;
    Format copy_format;
    Format grad_format;
    Format state_format;
    Rounding param_rounding;
    Rounding state_rounding;
};

// One tensor of a multi-tensor SGD / RMSprop / Adagrad update in any supported formats:
// as FormatAdamTensor, with up to kMaxStateBuffers state buffers in the optimizer's order
// (null: not used), all in state_format, and their absmax arrays (q8 only).
constexpr std::size_t kMaxStateBuffers = 3;

struct FormatStateTensor {
    void* param;
    void* param_copy;
    const void* grad;
    void* state[kMaxStateBuffers];
    float* absmax[kMaxStateBuffers];
    std::uint64_t seed;
    std::size_t n;
    Format param_format;
    Format copy_format;
    Format grad_format;
    Format state_format;
    Rounding param_rounding;
    Rounding state_rounding;
};

}  // namespace fastoptim
