// The dispatch table of the reduced-precision format kernels (kernels/adam_formats.hpp,
// kernels/state_formats.hpp).
//
// Compiled once per SIMD target like the main table, plus an AVX-512 variant that also
// uses the AVX-512-BF16 conversion instruction (x86-64-v4 does not include it, so it is a
// separate object chosen at run time when the CPU has it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "fastoptim/config.hpp"
#include "fastoptim/formats/types.hpp"

namespace fastoptim::dispatch {

struct FormatOps {
    const char* name;
    void (*adam)(const FormatAdamTensor*, std::size_t, const AdamConfig&, int);
    // (tensors, count, config, step keying the stochastic rounding, threads)
    void (*sgd)(const FormatStateTensor*, std::size_t, const SGDConfig&, std::int64_t, int);
    void (*rmsprop)(const FormatStateTensor*, std::size_t, const RMSpropConfig&, std::int64_t, int);
    void (*adagrad)(const FormatStateTensor*, std::size_t, const AdagradConfig&, int);
    void (*encode)(void*, float*, const float*, std::size_t, Format, Rounding, bool, std::uint64_t,
                   std::int64_t);
    void (*decode)(float*, const void*, const float*, std::size_t, Format, bool);
    void (*map)(float*, bool);
    // the other elementwise optimizers (kernels/state_formats.hpp); those without a step
    // in their config take the step keying the stochastic rounding
    void (*adamax)(const FormatStateTensor*, std::size_t, const AdamaxConfig&, int);
    void (*nadam)(const FormatStateTensor*, std::size_t, const NAdamConfig&, int);
    void (*radam)(const FormatStateTensor*, std::size_t, const RAdamConfig&, int);
    void (*adadelta)(const FormatStateTensor*, std::size_t, const AdadeltaConfig&, std::int64_t, int);
    void (*lion)(const FormatStateTensor*, std::size_t, const LionConfig&, std::int64_t, int);
    void (*ademamix)(const FormatStateTensor*, std::size_t, const AdEMAMixConfig&, int);
};

#define FO_FORMAT_TABLE(t) const FormatOps* format_table_##t();
FO_FORMAT_TABLE(scalar)
#if defined(__x86_64__) || defined(_M_X64)
FO_FORMAT_TABLE(avx2)
FO_FORMAT_TABLE(avx512)
FO_FORMAT_TABLE(avx512bf16)
#endif
#undef FO_FORMAT_TABLE

// The format kernels matching the active SIMD target (dispatch::active()); on an avx512
// target, the AVX-512-BF16 variant when the CPU has it and it is not disabled.
const FormatOps& format_active();
// Allows or forbids the AVX-512-BF16 variant (tests run both); returns the previous setting.
bool set_bf16_instructions(bool allowed);
bool cpu_has_avx512bf16();

}  // namespace fastoptim::dispatch
