// Activation kernels fused with the bias of a dense layer.
//
// Forward:  z += bias (per column), y = act(z)          z, y: [rows, cols], bias: [cols]
// Backward: dz = dy * act'(z), dbias (=|+=) sum_rows dz  (the bias gradient in the same pass)
// Elementwise results are bitwise identical for any thread count; the bias gradient is
// summed in double over fixed row chunks, so it is too. Activations whose derivative is a
// function of the output (sigmoid, tanh, softmax) read y in backward; the others read z.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "fastoptim/nn_config.hpp"
#include "fastoptim/kernels/rows.hpp"
#include "fastoptim/kernels/vmath.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kMinPerThreadAct = 32768;  // elements per thread before splitting
constexpr std::size_t kBiasRowChunk = 32;         // rows per deterministic bias partial

template <class T>
struct GeluConst {
    static constexpr T k = T(0.7978845608028654);   // sqrt(2 / pi)
    static constexpr T c = T(0.044715);
    static constexpr T inv_sqrt2 = T(0.7071067811865476);
    static constexpr T inv_sqrt_2pi = T(0.3989422804014327);
};

// act(x) for the elementwise activations.
template <class T, Act A>
inline T act_value(T x, T alpha) {
    if constexpr (A == Act::relu) return x > T(0) ? x : T(0);
    else if constexpr (A == Act::leaky_relu) return x > T(0) ? x : alpha * x;
    else if constexpr (A == Act::sigmoid) return vsigmoid(x);
    else if constexpr (A == Act::tanh) return vtanh(x);
    else if constexpr (A == Act::gelu_tanh) {
        using G = GeluConst<T>;
        return T(0.5) * x * (T(1) + vtanh(G::k * (x + G::c * x * x * x)));
    } else if constexpr (A == Act::gelu) {
        return T(0.5) * x * (T(1) + std::erf(x * GeluConst<T>::inv_sqrt2));
    } else return x;
}

// act'(x) given the input x and the output y.
template <class T, Act A>
inline T act_grad(T x, T y, T alpha) {
    if constexpr (A == Act::relu) return x > T(0) ? T(1) : T(0);
    else if constexpr (A == Act::leaky_relu) return x > T(0) ? T(1) : alpha;
    else if constexpr (A == Act::sigmoid) return y * (T(1) - y);
    else if constexpr (A == Act::tanh) return T(1) - y * y;
    else if constexpr (A == Act::gelu_tanh) {
        using G = GeluConst<T>;
        const T x2 = x * x;
        const T t = vtanh(G::k * (x + G::c * x2 * x));
        return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * G::k * (T(1) + T(3) * G::c * x2);
    } else if constexpr (A == Act::gelu) {
        using G = GeluConst<T>;
        return T(0.5) * (T(1) + std::erf(x * G::inv_sqrt2)) + x * G::inv_sqrt_2pi * vexp(T(-0.5) * x * x);
    } else return T(1);
}

template <class T, Act A>
void act_forward_rows(T* y, T* z, const T* bias, std::size_t b, std::size_t e, std::size_t C,
                      T alpha) {
    for (std::size_t r = b; r < e; ++r) {
        T* __restrict zr = z + r * C;
        T* yr = y + r * C;  // may equal zr
        if (bias) {
            const T* __restrict br = bias;
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c) zr[c] = zr[c] + br[c];
        }
        if constexpr (A == Act::softmax) {
            T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
            for (std::size_t c = 0; c < C; ++c) m = zr[c] > m ? zr[c] : m;
            T s = T(0);
#pragma omp simd reduction(+ : s)
            for (std::size_t c = 0; c < C; ++c) {
                const T v = vexp(zr[c] - m);
                yr[c] = v;
                s += v;
            }
            const T inv = T(1) / s;
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c) yr[c] = yr[c] * inv;
        } else if constexpr (A != Act::none) {
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c) yr[c] = act_value<T, A>(zr[c], alpha);
        }
    }
}

// Calls run(std::integral_constant<Act, a>{}) for the runtime activation a: one
// instantiation of the row kernels per activation.
template <class F>
void with_act(Act a, F&& run) {
    switch (a) {
        case Act::none: run(std::integral_constant<Act, Act::none>{}); break;
        case Act::relu: run(std::integral_constant<Act, Act::relu>{}); break;
        case Act::leaky_relu: run(std::integral_constant<Act, Act::leaky_relu>{}); break;
        case Act::sigmoid: run(std::integral_constant<Act, Act::sigmoid>{}); break;
        case Act::tanh: run(std::integral_constant<Act, Act::tanh>{}); break;
        case Act::gelu_tanh: run(std::integral_constant<Act, Act::gelu_tanh>{}); break;
        case Act::gelu: run(std::integral_constant<Act, Act::gelu>{}); break;
        case Act::softmax: run(std::integral_constant<Act, Act::softmax>{}); break;
    }
}

// z [rows, C] += bias [C] (bias may be null); y [rows, C] = act(z). y may be z itself (the
// activation then replaces the pre-activation); for Act::none y is not written.
template <class T>
void bias_act_forward(T* y, T* z, const T* bias, std::size_t rows, std::size_t C,
                      const ActConfig& cfg, int nthreads) {
    const T alpha = T(cfg.alpha);
    auto run = [&](auto a) {
        constexpr Act A = decltype(a)::value;
        for_rows(rows, C, nthreads, kMinPerThreadAct, [&](std::size_t b, std::size_t e) {
            act_forward_rows<T, A>(y, z, bias, b, e, C, alpha);
        });
    };
    with_act(cfg.act, run);
}

// Rows [b, e): dz = dy * act'(z, y); part[c] += dz (in double) when part is not null.
// dz may equal dy. For Act::none dz is null and only the bias sums of dy are taken.
template <class T, Act A>
void act_backward_rows(T* dz, const T* dy, const T* z, const T* y, double* part, std::size_t b,
                       std::size_t e, std::size_t C, T alpha) {
    for (std::size_t r = b; r < e; ++r) {
        const T* dyr = dy + r * C;
        const T* src = dyr;
        if constexpr (A == Act::softmax) {
            const T* __restrict yr = y + r * C;
            T* dzr = dz + r * C;
            T dot = T(0);
#pragma omp simd reduction(+ : dot)
            for (std::size_t c = 0; c < C; ++c) dot += dyr[c] * yr[c];
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c) dzr[c] = yr[c] * (dyr[c] - dot);
            src = dzr;
        } else if constexpr (A != Act::none) {
            const T* __restrict zr = z ? z + r * C : nullptr;
            const T* __restrict yr = y ? y + r * C : nullptr;
            T* dzr = dz + r * C;
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c)
                dzr[c] = dyr[c] * act_grad<T, A>(zr ? zr[c] : T(0), yr ? yr[c] : T(0), alpha);
            src = dzr;
        }
        if (part) {
            double* __restrict pr = part;
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c) pr[c] += static_cast<double>(src[c]);
        }
    }
}

// dz [rows, C] = dy * act'(z) (z, y: the forward's pre-activation and output; each may be
// null when the activation does not read it); dbias [C] = (accumulate ? dbias : 0) +
// column sums of dz, when dbias is not null.
template <class T>
void act_backward(T* dz, const T* dy, const T* z, const T* y, T* dbias, std::size_t rows,
                  std::size_t C, const ActConfig& cfg, bool accumulate_bias, int nthreads) {
    const T alpha = T(cfg.alpha);
    const std::size_t nchunks = (rows + kBiasRowChunk - 1) / kBiasRowChunk;
    std::vector<double> part(dbias ? nchunks * C : 0, 0.0);
    auto run = [&](auto a) {
        constexpr Act A = decltype(a)::value;
        auto chunk = [&](std::size_t k) {
            act_backward_rows<T, A>(dz, dy, z, y, dbias ? part.data() + k * C : nullptr,
                                    k * kBiasRowChunk, std::min(rows, (k + 1) * kBiasRowChunk),
                                    C, alpha);
        };
        const int nt = std::min<int>(threads_for(rows * C, nthreads, kMinPerThreadAct),
                                     static_cast<int>(std::min<std::size_t>(nchunks, 1 << 30)));
        for_each_chunk(nchunks, nt, chunk);
    };
    with_act(cfg.act, run);
    if (!dbias) return;
    for (std::size_t c = 0; c < C; ++c) {
        double s = accumulate_bias ? static_cast<double>(dbias[c]) : 0.0;
        for (std::size_t k = 0; k < nchunks; ++k) s += part[k * C + c];  // fixed order
        dbias[c] = static_cast<T>(s);
    }
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
