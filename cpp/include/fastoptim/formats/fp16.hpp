// IEEE binary16 <-> float32 through the compiler's _Float16 (round to nearest even). On
// x86-64-v3 and v4 this is F16C's vcvtph2ps / vcvtps2ph and vectorizes; on the baseline
// target it is a library call (correct, slower).
#pragma once

#include <cstdint>
#include <cstring>

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

inline float f16_load(std::uint16_t h) {
    _Float16 x;
    std::memcpy(&x, &h, 2);
    return static_cast<float>(x);
}

inline std::uint16_t f16_nearest(float x) {
    const _Float16 h = static_cast<_Float16>(x);
    std::uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
