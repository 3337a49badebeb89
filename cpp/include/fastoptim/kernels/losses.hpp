// Loss kernels: the loss and its gradient with respect to the input in one pass.
//
// Readable loops that the compiler vectorizes (`omp simd`, exp from vmath.hpp), compiled
// once per SIMD target. Each kernel returns the reduced loss (accumulated in double over
// fixed chunks: the same bits for any thread count) and, when `grad` is not null,
// OVERWRITES grad with d(loss)/d(input), already scaled by the reduction. NaN inputs
// propagate into the loss and the gradient (nothing is checked or skipped here).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "fastoptim/nn_config.hpp"
#include "fastoptim/kernels/rows.hpp"
#include "fastoptim/kernels/vmath.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kLossChunk = 4096;            // elements per deterministic partial sum
constexpr std::size_t kXentRowChunk = 64;           // rows per partial sum
constexpr std::size_t kMinPerThreadLoss = 65536;    // elements per thread before splitting
constexpr std::size_t kXentSimdMin = 32;            // classes below which row loops stay scalar

// Sum over [0, n) of the elementwise loss K; g[i] = scale * dloss/dp[i] when G.
template <class T, PointLoss K, bool G>
double point_loss_range(T* __restrict g, const T* __restrict p, const T* __restrict t,
                        std::size_t n, T scale, T delta) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (std::size_t i = 0; i < n; ++i) {
        const T x = p[i], y = t[i];
        T l, d;
        if constexpr (K == PointLoss::mse) {
            const T r = x - y;
            l = r * r;
            d = T(2) * r;
        } else if constexpr (K == PointLoss::mae) {
            const T r = x - y;
            l = r < T(0) ? -r : r;
            d = r > T(0) ? T(1) : (r < T(0) ? T(-1) : (r == T(0) ? T(0) : r));  // sign, NaN kept
        } else if constexpr (K == PointLoss::huber) {
            const T r = x - y;
            const T a = r < T(0) ? -r : r;
            l = a <= delta ? T(0.5) * r * r : delta * (a - T(0.5) * delta);
            d = r < -delta ? -delta : (r > delta ? delta : r);
        } else {  // bce_logits: max(x,0) - x y + log(1 + exp(-|x|)); d = sigmoid(x) - y
            const T a = x < T(0) ? -x : x;
            const T e = vexp(-a);
            l = (x > T(0) ? x : T(0)) - x * y + vlog1p_unit(e);
            const T s = T(1) / (T(1) + e);
            d = (x < T(0) ? e * s : s) - y;
        }
        acc += static_cast<double>(l);
        if constexpr (G) g[i] = scale * d;
    }
    return acc;
}

// Elementwise loss of p against t ([n] each); returns scale * sum of losses. grad: [n] or null.
template <class T>
double point_loss(T* grad, const T* p, const T* t, std::size_t n, const PointLossConfig& c,
                  int nthreads) {
    const T scale = T(c.scale), delta = T(c.delta);
    auto run = [&](auto kind) {
        constexpr PointLoss K = decltype(kind)::value;
        return chunked_sum(n, kLossChunk, 1, nthreads, kMinPerThreadLoss,
                           [&](std::size_t b, std::size_t e) {
                               return grad ? point_loss_range<T, K, true>(grad + b, p + b, t + b,
                                                                          e - b, scale, delta)
                                           : point_loss_range<T, K, false>(nullptr, p + b,
                                                                           t + b, e - b, scale,
                                                                           delta);
                           });
    };
    double s = 0.0;
    switch (c.kind) {
        case PointLoss::mse: s = run(std::integral_constant<PointLoss, PointLoss::mse>{}); break;
        case PointLoss::mae: s = run(std::integral_constant<PointLoss, PointLoss::mae>{}); break;
        case PointLoss::huber:
            s = run(std::integral_constant<PointLoss, PointLoss::huber>{});
            break;
        case PointLoss::bce_logits:
            s = run(std::integral_constant<PointLoss, PointLoss::bce_logits>{});
            break;
    }
    return s * c.scale;
}

// One row of softmax cross-entropy. The target is a vector of per-class coefficients
// a_c (>= 0): loss = sum_c a_c (lse - z_c), d loss / d z_c = (sum_c a_c) softmax_c - a_c.
// Every variant fits: integer label y -> a = (1 - eps) w_y onehot(y) + eps/C w; probability
// target t -> a = ((1 - eps) t + eps/C) w. Terms with a_c == 0 are skipped, so -inf logits
// of classes outside the target give a finite loss.
template <class T, bool G, bool LABEL>
double xent_row(T* __restrict g, const T* __restrict z, std::int64_t y, const T* __restrict t,
                const T* __restrict w, std::size_t C, T keep, T smooth, T scale) {
    T m = -std::numeric_limits<T>::infinity();
    if (C < kXentSimdMin) {
        for (std::size_t c = 0; c < C; ++c) m = z[c] > m ? z[c] : m;
    } else {
#pragma omp simd reduction(max : m)
        for (std::size_t c = 0; c < C; ++c) m = z[c] > m ? z[c] : m;
    }
    T sum = T(0);
    if (C < kXentSimdMin) {  // short rows: a plain loop beats the simd-lane setup
        for (std::size_t c = 0; c < C; ++c) {
            const T e = vexp(z[c] - m);
            if constexpr (G) g[c] = e;
            sum += e;
        }
    } else if constexpr (G) {
#pragma omp simd reduction(+ : sum)
        for (std::size_t c = 0; c < C; ++c) {
            const T e = vexp(z[c] - m);
            g[c] = e;
            sum += e;
        }
    } else {
#pragma omp simd reduction(+ : sum)
        for (std::size_t c = 0; c < C; ++c) sum += vexp(z[c] - m);
    }
    const T lse = m + std::log(sum);
    T asum = T(0), loss = T(0);
    if constexpr (LABEL) {
        // a = base + extra onehot(y), base_c = smooth w_c: the base loop only runs when
        // smoothing is on, and the label's term is added once (no per-class compare).
        const T extra = keep * (w ? w[y] : T(1));
        if (smooth != T(0)) {
#pragma omp simd reduction(+ : asum, loss)
            for (std::size_t c = 0; c < C; ++c) {
                const T a = smooth * (w ? w[c] : T(1));
                asum += a;
                loss += a != T(0) ? a * (lse - z[c]) : T(0);
            }
        }
        asum += extra;
        loss += extra != T(0) ? extra * (lse - z[y]) : T(0);
        if constexpr (G) {
            // g = scale (asum softmax - a); the label's term is subtracted before scaling so
            // that a row whose softmax is exactly onehot(y) gets an exactly zero gradient.
            const T invsum = T(1) / sum;
            if (smooth != T(0)) {
#pragma omp simd
                for (std::size_t c = 0; c < C; ++c)
                    g[c] = asum * (g[c] * invsum) - smooth * (w ? w[c] : T(1));
            } else {
#pragma omp simd
                for (std::size_t c = 0; c < C; ++c) g[c] = asum * (g[c] * invsum);
            }
            g[y] -= extra;
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c) g[c] = g[c] * scale;
        }
    } else {
#pragma omp simd reduction(+ : asum, loss)
        for (std::size_t c = 0; c < C; ++c) {
            const T a = (keep * t[c] + smooth) * (w ? w[c] : T(1));
            asum += a;
            loss += a != T(0) ? a * (lse - z[c]) : T(0);
        }
        if constexpr (G) {
            const T invsum = T(1) / sum;
#pragma omp simd
            for (std::size_t c = 0; c < C; ++c)
                g[c] = scale * (asum * (g[c] * invsum) - (keep * t[c] + smooth) * (w ? w[c] : T(1)));
        }
    }
    return static_cast<double>(loss);
}

// Softmax cross-entropy of logits [rows, C] against integer labels [rows] (values in
// [0, C), checked by the caller) or probability targets [rows, C] (exactly one of the two
// is non-null). weights: [C] or null. Mean reduction divides by sum_i w[y_i] for labels
// (rows without weights) and by rows for probability targets, as torch does. Returns the
// reduced loss; grad [rows, C] (or null) gets its gradient.
template <class T>
double softmax_xent(T* grad, const T* logits, const std::int64_t* labels, const T* targets,
                    const T* weights, std::size_t rows, std::size_t C, const XentConfig& c,
                    int nthreads) {
    if (rows == 0 || C == 0) return c.mean ? std::numeric_limits<double>::quiet_NaN() : 0.0;
    double denom = 1.0;
    if (c.mean) {
        denom = static_cast<double>(rows);
        if (labels && weights) {
            denom = 0.0;
            for (std::size_t i = 0; i < rows; ++i) denom += static_cast<double>(weights[labels[i]]);
        }
    }
    const double eps = c.label_smoothing;
    const T keep = T(1.0 - eps), smooth = T(eps / static_cast<double>(C));
    const T scale = T(1.0 / denom);
    const double total = chunked_sum(
        rows, kXentRowChunk, C, nthreads, kMinPerThreadLoss, [&](std::size_t b, std::size_t e) {
            double s = 0.0;
            for (std::size_t i = b; i < e; ++i) {
                const T* z = logits + i * C;
                T* g = grad ? grad + i * C : nullptr;
                if (labels) {
                    s += grad ? xent_row<T, true, true>(g, z, labels[i], nullptr, weights, C,
                                                        keep, smooth, scale)
                              : xent_row<T, false, true>(nullptr, z, labels[i], nullptr,
                                                         weights, C, keep, smooth, scale);
                } else {
                    const T* t = targets + i * C;
                    s += grad ? xent_row<T, true, false>(g, z, 0, t, weights, C, keep, smooth,
                                                         scale)
                              : xent_row<T, false, false>(nullptr, z, 0, t, weights, C, keep,
                                                          smooth, scale);
                }
            }
            return s;
        });
    return total / denom;
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
