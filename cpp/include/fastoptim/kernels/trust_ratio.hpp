// Trust-ratio optimizers: LAMB (You et al. 2020) and LARS (You et al. 2017), as
// pytorch-optimizer 4.1.0's Lamb and LARS.
//
// A trust ratio needs two norms per tensor before any element of it can be updated, so a
// step is two native passes over each tensor, both multi-tensor and in parallel:
//   1. the norm pass: LAMB updates the moments in place and accumulates, per tensor, the
//      squared norms of the (decayed) parameter and of the Adam update; LARS only reads
//      the parameter and the gradient;
//   2. the update pass: LAMB recomputes the Adam update from the new moments and applies
//      it scaled by the tensor's trust ratio; LARS scales the gradient, then SGD momentum.
// With adam=True (LAMB) or trust=False (LARS) the step is one fused pass.
//
// Determinism: the norm pass cuts every tensor into fixed chunks of kNormChunk elements,
// independent of the thread count; each chunk's sums go to their own slot (accumulated in
// double) and are added in order, so the trust ratios, and the step, are bitwise identical
// for any thread count. Same contract as optimizers.hpp otherwise: readable `omp simd`
// loops, no intrinsics, compiled once per SIMD target.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "fastoptim/config.hpp"
#include "fastoptim/kernels/parallel.hpp"
#include "fastoptim/kernels/reductions.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kMinPerThreadLamb = 32768;

// Calls sums(i, off, len, out) on fixed chunks of every tensor (sizes size_of(i)), in
// parallel when the total is large; out[0..K) of each tensor are the in-order sums of its
// chunks' K partial sums (per-tensor reductions, bitwise identical for any thread count).
template <std::size_t K, class SizeOf, class F>
std::vector<double> per_tensor_sums(std::size_t count, SizeOf&& size_of, int nthreads,
                                    F&& sums) {
    std::vector<std::size_t> first(count + 1, 0);  // first chunk id of each tensor
    std::size_t total = 0;
    for (std::size_t i = 0; i < count; ++i) {
        const std::size_t n = size_of(i);
        first[i + 1] = first[i] + (n + kNormChunk - 1) / kNormChunk;
        total += n;
    }
    std::vector<double> part(first[count] * K, 0.0);
    auto chunk = [&](std::size_t c) {
        const std::size_t i =
            static_cast<std::size_t>(std::upper_bound(first.begin(), first.end(), c) -
                                     first.begin()) - 1;
        const std::size_t off = (c - first[i]) * kNormChunk;
        sums(i, off, std::min(kNormChunk, size_of(i) - off), &part[c * K]);
    };
    for_each_chunk(first[count], threads_for(total, nthreads, kMinPerThreadLamb), chunk);
    std::vector<double> out(count * K, 0.0);
    for (std::size_t i = 0; i < count; ++i)
        for (std::size_t c = first[i]; c < first[i + 1]; ++c)
            for (std::size_t k = 0; k < K; ++k) out[i * K + k] += part[c * K + k];
    return out;
}

// Scalars of one LAMB step, in the tensors' precision.
template <class T>
struct LambScalars {
    T sign, keep, weight_decay, beta1, beta3, beta2, one_minus_beta2, eps;
};

// The Adam direction of one element from the new moments and the (decayed) parameter:
// m / (sqrt(v) + eps), plus weight_decay * p for L2 decay.
template <class T, Decay D>
inline T lamb_direction(T m, T v, T p, const LambScalars<T>& s) {
    T u = m / (std::sqrt(v) + s.eps);
    if constexpr (D == Decay::l2) u = u + s.weight_decay * p;
    return u;
}

// Norm pass on p, g, m, v: [n]: the moments in place; out[0] += |p'|^2, out[1] += |u|^2.
template <class T, Decay D>
void lamb_norm_range(const T* __restrict p, const T* __restrict g, T* __restrict m,
                     T* __restrict v, std::size_t n, const LambScalars<T>& s, double* out) {
    const T sign = s.sign, keep = s.keep, b1 = s.beta1, b3 = s.beta3, b2 = s.beta2;
    const T w2 = s.one_minus_beta2;
    double pp = 0.0, uu = 0.0;
#pragma omp simd reduction(+ : pp, uu)
    for (std::size_t i = 0; i < n; ++i) {
        const T gi = sign * g[i];
        const T mi = m[i] * b1 + b3 * gi;          // exp_avg.mul_(b1).add_(g, alpha=beta3)
        const T vi = v[i] * b2 + w2 * gi * gi;     // exp_avg_sq.mul_(b2).addcmul_(g, g)
        T pi = p[i];
        if constexpr (D == Decay::decoupled) pi = pi * keep;  // p.mul_(1 - wd lr)
        const T u = lamb_direction<T, D>(mi, vi, pi, s);
        m[i] = mi;
        v[i] = vi;
        pp += static_cast<double>(pi) * static_cast<double>(pi);
        uu += static_cast<double>(u) * static_cast<double>(u);
    }
    out[0] += pp;
    out[1] += uu;
}

// Update pass on p, m, v: [n]: p = p' - rate * u (rate = lr / bc1 * trust ratio).
template <class T, Decay D>
void lamb_update_range(T* __restrict p, const T* __restrict m, const T* __restrict v,
                       std::size_t n, const LambScalars<T>& s, T neg_rate) {
    const T keep = s.keep;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T pi = p[i];
        if constexpr (D == Decay::decoupled) pi = pi * keep;
        p[i] = pi + neg_rate * lamb_direction<T, D>(m[i], v[i], pi, s);
    }
}

// adam=True: both passes fused (the trust ratio is 1).
template <class T, Decay D>
void lamb_fused_range(T* __restrict p, const T* __restrict g, T* __restrict m,
                      T* __restrict v, std::size_t n, const LambScalars<T>& s, T neg_rate) {
    const T sign = s.sign, keep = s.keep, b1 = s.beta1, b3 = s.beta3, b2 = s.beta2;
    const T w2 = s.one_minus_beta2;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        const T gi = sign * g[i];
        const T mi = m[i] * b1 + b3 * gi;
        const T vi = v[i] * b2 + w2 * gi * gi;
        T pi = p[i];
        if constexpr (D == Decay::decoupled) pi = pi * keep;
        p[i] = pi + neg_rate * lamb_direction<T, D>(mi, vi, pi, s);
        m[i] = mi;
        v[i] = vi;
    }
}

// One LAMB step over `count` tensors. The config must satisfy validate(c).
template <class T>
void lamb_multi(const MomentsTensor<T>* ts, std::size_t count, const LambConfig& c, int nthreads) {
    LambScalars<T> s{};
    s.sign = T(grad_factor(c));  // -1 for maximize, times grad_scale
    s.keep = T(1.0 - c.weight_decay * (c.fixed_decay ? 1.0 : c.lr));
    s.weight_decay = T(c.weight_decay);
    s.beta1 = T(c.beta1);
    s.beta3 = T(c.grad_averaging ? 1.0 - c.beta1 : 1.0);
    s.beta2 = T(c.beta2);
    s.one_minus_beta2 = T(1.0 - c.beta2);
    s.eps = T(c.eps);
    // pytorch-optimizer: step_size = lr / (1 - beta1^step)
    const double step_size = c.lr / (1.0 - std::pow(c.beta1, static_cast<double>(c.step)));
    auto size_of = [ts](std::size_t i) { return ts[i].n; };
    auto run = [&](auto d) {
        constexpr Decay D = decltype(d)::value;
        if (c.adam) {
            const T neg = T(-step_size);
            for_each_range(count, size_of, nthreads, kMinPerThreadLamb,
                           [ts, &s, neg](std::size_t i, std::size_t b, std::size_t e) {
                               const MomentsTensor<T>& t = ts[i];
                               lamb_fused_range<T, D>(t.param + b, t.grad + b, t.exp_avg + b,
                                                      t.exp_avg_sq + b, e - b, s, neg);
                           });
            return;
        }
        const std::vector<double> norms = per_tensor_sums<2>(
            count, size_of, nthreads,
            [ts, &s](std::size_t i, std::size_t off, std::size_t n, double* out) {
                const MomentsTensor<T>& t = ts[i];
                lamb_norm_range<T, D>(t.param + off, t.grad + off, t.exp_avg + off,
                                      t.exp_avg_sq + off, n, s, out);
            });
        std::vector<T> neg(count);
        for (std::size_t i = 0; i < count; ++i) {
            // weight norm clamped to [0, 10] (pytorch-optimizer's Lamb.clamp)
            const double wn = std::min(std::sqrt(norms[2 * i]), c.clamp);
            const double un = std::sqrt(norms[2 * i + 1]);
            const double trust = (wn == 0.0 || un == 0.0) ? 1.0 : wn / (un + c.eps);
            neg[i] = T(-step_size * trust);
        }
        for_each_range(count, size_of, nthreads, kMinPerThreadLamb,
                       [ts, &s, &neg](std::size_t i, std::size_t b, std::size_t e) {
                           const MomentsTensor<T>& t = ts[i];
                           lamb_update_range<T, D>(t.param + b, t.exp_avg + b,
                                                   t.exp_avg_sq + b, e - b, s, neg[i]);
                       });
    };
    const Decay d = c.weight_decay == 0.0 ? Decay::none
                    : c.weight_decouple   ? Decay::decoupled
                                          : Decay::l2;
    switch (d) {
        case Decay::none: run(std::integral_constant<Decay, Decay::none>{}); break;
        case Decay::l2: run(std::integral_constant<Decay, Decay::l2>{}); break;
        case Decay::decoupled: run(std::integral_constant<Decay, Decay::decoupled>{}); break;
    }
}

// LARS norm pass on p, g: [n]: out[0] += |p|^2, out[1] += |scale g|^2 (scale: grad_scale;
// maximize's sign does not change the norm). The scaled gradient is rounded to T first,
// as a scaled copy of the gradient would be.
template <class T>
void lars_norm_range(const T* __restrict p, const T* __restrict g, std::size_t n, T scale,
                     double* out) {
    double pp = 0.0, gg = 0.0;
#pragma omp simd reduction(+ : pp, gg)
    for (std::size_t i = 0; i < n; ++i) {
        const double pi = static_cast<double>(p[i]), gi = static_cast<double>(T(scale * g[i]));
        pp += pi * pi;
        gg += gi * gi;
    }
    out[0] += pp;
    out[1] += gg;
}

// Scalars of one LARS step, in the tensors' precision.
template <class T>
struct LarsScalars {
    T sign, weight_decay, momentum, one_minus_dampening, neg_lr;
};

// LARS update on p, g, buf: [n] with the tensor's trust ratio r. W: trust scaling with decay
// (g = (g + wd p) r); S: trust scaling without decay (g = g r); M: momentum; N: Nesterov.
template <class T, bool W, bool S, bool M, bool N>
void lars_update_range(T* __restrict p, const T* __restrict g, T* __restrict buf,
                       std::size_t n, const LarsScalars<T>& s, T r) {
    const T sign = s.sign, wd = s.weight_decay, mom = s.momentum;
    const T damp = s.one_minus_dampening, neg_lr = s.neg_lr;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        const T pi = p[i];
        T gi = sign * g[i];
        if constexpr (W) gi = (gi + wd * pi) * r;          // grad.add_(p, wd).mul_(r)
        if constexpr (S) gi = gi * r;
        if constexpr (M) {
            const T b = buf[i] * mom + damp * gi;          // mb.mul_(m).add_(g, 1 - d)
            buf[i] = b;
            gi = N ? gi + mom * b : b;
        }
        p[i] = pi + neg_lr * gi;                           // p.add_(g, alpha=-lr)
    }
}

// One LARS step over `count` tensors, all with the same `trust` (the front ends call it
// once for a group's matrices and once for its vectors). The config must satisfy validate(c).
template <class T>
void lars_multi(const SGDTensor<T>* ts, std::size_t count, const LarsConfig& c, int nthreads) {
    const LarsScalars<T> s{T(grad_factor(c)), T(c.weight_decay), T(c.momentum),
                           T(1.0 - c.dampening), T(-c.lr)};
    const T scale = T(c.grad_scale);
    auto size_of = [ts](std::size_t i) { return ts[i].n; };
    std::vector<T> ratio(count, T(1));
    if (c.trust) {
        const std::vector<double> norms = per_tensor_sums<2>(
            count, size_of, nthreads,
            [ts, scale](std::size_t i, std::size_t off, std::size_t n, double* out) {
                lars_norm_range<T>(ts[i].param + off, ts[i].grad + off, n, scale, out);
            });
        for (std::size_t i = 0; i < count; ++i) {
            const double pn = std::sqrt(norms[2 * i]), gn = std::sqrt(norms[2 * i + 1]);
            const double den = gn + c.weight_decay * pn;
            ratio[i] = T(pn > 0.0 && den > 0.0 ? c.trust_coefficient * pn / den : 1.0);
        }
    }
    auto run = [&](auto wc, auto sc, auto mc, auto nc) {
        constexpr bool W = decltype(wc)::value, S = decltype(sc)::value;
        constexpr bool M = decltype(mc)::value, N = decltype(nc)::value;
        for_each_range(count, size_of, nthreads, kMinPerThreadLamb,
                       [ts, &s, &ratio](std::size_t i, std::size_t b, std::size_t e) {
                           const SGDTensor<T>& t = ts[i];
                           lars_update_range<T, W, S, M, N>(
                               t.param + b, t.grad + b, M ? t.momentum_buffer + b : nullptr,
                               e - b, s, ratio[i]);
                       });
    };
    auto with_momentum = [&](auto wc, auto sc) {
        if (c.momentum == 0.0) run(wc, sc, std::false_type{}, std::false_type{});
        else if (c.nesterov) run(wc, sc, std::true_type{}, std::true_type{});
        else run(wc, sc, std::true_type{}, std::false_type{});
    };
    if (!c.trust) with_momentum(std::false_type{}, std::false_type{});
    else if (c.weight_decay != 0.0) with_momentum(std::true_type{}, std::false_type{});
    else with_momentum(std::false_type{}, std::true_type{});
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
