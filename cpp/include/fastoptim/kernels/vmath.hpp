// Vectorizable elementary functions for the loss and activation kernels.
//
// glibc's vector math library is only used under fast-math, which fastoptim never
// enables, so std::exp inside an `omp simd` loop stays scalar. These inline versions are
// branch-free (selects only) so the compiler vectorizes them for every target:
//   exp: Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, Taylor polynomial on r
//        (degree 7 for float, 13 for double: truncation below 1 ulp), 2^k built in the
//        exponent bits. exp(x) is 0 below the smallest normal result, +inf above the
//        largest finite one, NaN for NaN.
//   sigmoid, tanh: from exp(-|x|), so they never overflow.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

namespace vm {

template <class T>
struct ExpConst;

template <>
struct ExpConst<float> {
    using I = std::int32_t;
    static constexpr int mbits = 23;
    static constexpr I bias = 127;
    static constexpr float lo = -87.3f, hi = 88.3f;
    static constexpr float shift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    static constexpr float ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-06f;
    static constexpr int degree = 7;
};

template <>
struct ExpConst<double> {
    using I = std::int64_t;
    static constexpr int mbits = 52;
    static constexpr I bias = 1023;
    static constexpr double lo = -708.0, hi = 709.0;
    static constexpr double shift = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double ln2_hi = 6.93147180369123816490e-01,
                            ln2_lo = 1.90821492927058770002e-10;
    static constexpr int degree = 13;
};

template <class To, class From>
inline To bit_cast(From x) {
    static_assert(sizeof(To) == sizeof(From));
    To y;
    std::memcpy(&y, &x, sizeof(To));
    return y;
}

}  // namespace vm

// exp(x), vectorizable; relative error ~1 ulp.
template <class T>
inline T vexp(T x) {
    using C = vm::ExpConst<T>;
    using I = typename C::I;
    const T xc = x < C::lo ? C::lo : (x > C::hi ? C::hi : x);  // NaN passes through
    const T t = xc * T(1.4426950408889634) + C::shift;
    const T k = t - C::shift;  // nearest integer to x / ln2
    const T r = (xc - k * C::ln2_hi) - k * C::ln2_lo;
    T p = T(1);
    T coef = T(1);
    // Horner on the Taylor series: 1 + r(1 + r/2(1 + r/3(...)))
    for (int d = C::degree; d >= 1; --d) {
        coef = T(1) / T(d);
        p = T(1) + r * coef * p;
    }
    (void)coef;
    // 2^k built in the exponent field. Unsigned arithmetic: for a NaN or huge x the
    // integer is garbage (the select below discards it), and a signed overflow or
    // left shift of it would be undefined behaviour (UBSan reports it).
    using U = std::make_unsigned_t<I>;
    const U ki = vm::bit_cast<U>(t) - vm::bit_cast<U>(C::shift);
    const T scale = vm::bit_cast<T>(static_cast<U>((ki + static_cast<U>(C::bias)) << C::mbits));
    const T y = p * scale;
    return x < C::lo ? T(0) : (x > C::hi ? std::numeric_limits<T>::infinity() : y);
}

// 1 / (1 + exp(-x)), stable for any x.
template <class T>
inline T vsigmoid(T x) {
    const T e = vexp(x < T(0) ? x : -x);  // exp(-|x|) in (0, 1]
    const T s = T(1) / (T(1) + e);
    return x < T(0) ? e * s : s;
}

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|); absolute error ~1 ulp of 1.
template <class T>
inline T vtanh(T x) {
    const T a = x < T(0) ? -x : x;
    const T e = vexp(T(-2) * a);
    const T t = (T(1) - e) / (T(1) + e);
    return x < T(0) ? -t : t;
}

// log(1 + e) for e in [0, 1] (the log1p(exp(-|x|)) of a stable log-sigmoid): with
// s = e / (2 + e) <= 1/3, log(1 + e) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), summed
// until the next term is below 1 ulp. Exact near 0, no cancellation.
template <class T>
inline T vlog1p_unit(T e) {
    constexpr int terms = std::is_same_v<T, float> ? 8 : 17;
    const T s = e / (T(2) + e);
    const T z = s * s;
    T p = T(1) / T(2 * terms + 1);
    for (int k = terms - 1; k >= 0; --k) p = T(1) / T(2 * k + 1) + z * p;
    return T(2) * s * p;
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
