// bfloat16 <-> float32, element by element: loading is a 16-bit shift; storing rounds to
// nearest even or stochastically with integer arithmetic (vectorizes on any target). NaN
// stays a quiet NaN; rounding can carry into the exponent (to infinity near FLT_MAX), as
// IEEE rounding does. Stochastic rounding adds 16 random bits below the kept mantissa and
// truncates: it rounds up with probability (x - down) / (up - down), so E[round(x)] = x.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

inline std::uint32_t f32_bits(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}

inline float bits_f32(std::uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

inline float bf16_load(std::uint16_t h) { return bits_f32(static_cast<std::uint32_t>(h) << 16); }

inline std::uint16_t bf16_nearest(float x) {
    const std::uint32_t u = f32_bits(x);
    const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
    const std::uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return static_cast<std::uint16_t>(nan ? ((u >> 16) | 0x40u) : r);
}

// `bits`: uniform random; its low 16 bits are used.
inline std::uint16_t bf16_stochastic(float x, std::uint32_t bits) {
    const std::uint32_t u = f32_bits(x);
    const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
    const bool inf = (u & 0x7FFFFFFFu) == 0x7F800000u;
    const std::uint32_t r = (u + (bits & 0xFFFFu)) >> 16;
    return static_cast<std::uint16_t>(nan ? ((u >> 16) | 0x40u) : (inf ? (u >> 16) : r));
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
