// Optimizer update kernels: one fused pass over memory per tensor, in place.
//
// Readable loops that the compiler vectorizes (`omp simd`), no intrinsics: this file is
// compiled once per SIMD target, each time inside its own namespace. The math follows
// torch.optim's single-tensor implementations operation by operation (torch/optim/sgd.py,
// torch/optim/adam.py), so the two can be swapped and compared in lockstep.
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>

#include "fastoptim/config.hpp"
#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

// Elements per thread below which no parallel region is opened. On an idle machine two
// threads break even near 4,096 elements per thread (bench/bench_parallel_threshold.py),
// but when the cores are busy a region can wait milliseconds for a descheduled thread:
// the thresholds sit well above break-even so small updates never risk that.
constexpr std::size_t kMinPerThreadSGD = 65536;
constexpr std::size_t kMinPerThreadAdam = 32768;

enum class Decay { none, l2, decoupled };
enum class Momentum { none, first, running };

// Scalars of one SGD step, in the tensors' precision.
template <class T>
struct SGDScalars {
    T sign, weight_decay, momentum, one_minus_dampening, neg_lr;
};

// p, g, buf: [n]. buf is unused when M == Momentum::none.
template <class T, bool WD, Momentum M, bool NESTEROV>
void sgd_range(T* __restrict p, const T* __restrict g, T* __restrict buf, std::size_t n,
               const SGDScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, mom = s.momentum;
    const T damp1 = s.one_minus_dampening, neg_lr = s.neg_lr;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T d = sign * g[i];                                 // maximize flips the gradient
        if constexpr (WD) d = d + wd * p[i];               // L2: grad + wd * param
        if constexpr (M == Momentum::first) buf[i] = d;    // first step: buf = grad
        if constexpr (M == Momentum::running) buf[i] = buf[i] * mom + damp1 * d;
        if constexpr (M != Momentum::none) d = NESTEROV ? d + mom * buf[i] : buf[i];
        p[i] = p[i] + neg_lr * d;
    }
}

template <class T, bool WD, Momentum M, bool NESTEROV>
void sgd_multi_impl(const SGDTensor<T>* ts, std::size_t count, const SGDScalars<T>& s,
                    int nthreads) {
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadSGD,
        [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
            const SGDTensor<T>& t = ts[i];
            sgd_range<T, WD, M, NESTEROV>(t.param + b, t.grad + b,
                                          t.momentum_buffer ? t.momentum_buffer + b : nullptr,
                                          e - b, s);
        });
}

// One SGD step over `count` tensors. The config must satisfy validate(c).
template <class T>
void sgd_multi(const SGDTensor<T>* ts, std::size_t count, const SGDConfig& c, int nthreads) {
    const SGDScalars<T> s{T(grad_factor(c)), T(c.weight_decay),
                          T(c.momentum),
                          T(1.0 - c.dampening), T(-c.lr)};
    const bool wd = c.weight_decay != 0.0;
    if (c.momentum == 0.0) {
        wd ? sgd_multi_impl<T, true, Momentum::none, false>(ts, count, s, nthreads)
           : sgd_multi_impl<T, false, Momentum::none, false>(ts, count, s, nthreads);
        return;
    }
    // 2 x 2 x 2 instantiations: weight decay, first/running momentum, nesterov.
    auto run = [&](auto wd_c, auto nest_c) {
        constexpr bool W = decltype(wd_c)::value, N = decltype(nest_c)::value;
        c.first_step ? sgd_multi_impl<T, W, Momentum::first, N>(ts, count, s, nthreads)
                     : sgd_multi_impl<T, W, Momentum::running, N>(ts, count, s, nthreads);
    };
    using Y = std::true_type;
    using F = std::false_type;
    if (wd) c.nesterov ? run(Y{}, Y{}) : run(Y{}, F{});
    else c.nesterov ? run(F{}, Y{}) : run(F{}, F{});
}

// Scalars of one Adam step, in the tensors' precision; bias corrections come from the
// int64 step in double, as torch computes them in Python floats.
template <class T>
struct AdamScalars {
    T sign, weight_decay, keep, one_minus_beta1, beta2, one_minus_beta2, inv_bc2_sqrt, eps,
        neg_step_size;
};

// p, g, m, v, vmax: [n]. vmax is only touched when AMSGRAD.
template <class T, Decay D, bool AMSGRAD>
void adam_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                T* __restrict vmax, std::size_t n, const AdamScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, keep = s.keep, w1 = s.one_minus_beta1;
    const T b2 = s.beta2, w2 = s.one_minus_beta2, ibc2 = s.inv_bc2_sqrt, eps = s.eps;
    const T nss = s.neg_step_size;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];
        T pi = p[i];
        if constexpr (D == Decay::l2) gi = gi + wd * pi;       // Adam: L2 into the gradient
        if constexpr (D == Decay::decoupled) pi = pi * keep;   // AdamW: p *= 1 - lr * wd
        const T mi = m[i] + w1 * (gi - m[i]);                  // m.lerp_(g, 1 - beta1)
        const T vi = v[i] * b2 + w2 * gi * gi;                 // v = b2 v + (1 - b2) g^2
        T vh = vi;
        if constexpr (AMSGRAD) {                               // NaN-propagating max
            const T old = vmax[i];
            vh = (old < vi || vi != vi) ? vi : old;
            vmax[i] = vh;
        }
        // eps after bias correction; torch divides by sqrt(bc2), a multiply by its inverse
        // is one division fewer (the loop's bottleneck in cache) and differs by <= 1 ulp.
        const T denom = std::sqrt(vh) * ibc2 + eps;
        p[i] = pi + nss * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

template <class T, Decay D, bool AMSGRAD>
void adam_multi_impl(const AdamTensor<T>* ts, std::size_t count, const AdamScalars<T>& s,
                     int nthreads) {
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadAdam,
        [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
            const AdamTensor<T>& t = ts[i];
            adam_range<T, D, AMSGRAD>(t.param + b, t.grad + b, t.exp_avg + b,
                                      t.exp_avg_sq + b,
                                      AMSGRAD ? t.max_exp_avg_sq + b : nullptr, e - b, s);
        });
}

// The per-step scalars of an Adam config, in precision T (shared by every Adam kernel).
template <class T>
AdamScalars<T> adam_scalars(const AdamConfig& c) {
    const double step = static_cast<double>(c.step);
    const double bc1 = 1.0 - std::pow(c.beta1, step);
    const double bc2 = 1.0 - std::pow(c.beta2, step);
    return AdamScalars<T>{T(grad_factor(c)),
                          T(c.weight_decay),
                          T(1.0 - c.lr * c.weight_decay),
                          T(1.0 - c.beta1),
                          T(c.beta2),
                          T(1.0 - c.beta2),
                          T(1.0 / std::sqrt(bc2)),
                          T(c.eps),
                          T(-(c.lr / bc1))};
}

inline Decay adam_decay(const AdamConfig& c) {
    return c.weight_decay == 0.0 ? Decay::none
           : c.decoupled_weight_decay ? Decay::decoupled
                                      : Decay::l2;
}

// One Adam/AdamW step over `count` tensors. The config must satisfy validate(c).
template <class T>
void adam_multi(const AdamTensor<T>* ts, std::size_t count, const AdamConfig& c,
                int nthreads) {
    const AdamScalars<T> s = adam_scalars<T>(c);
    const Decay d = adam_decay(c);
    auto run = [&](auto ams_c) {
        constexpr bool A = decltype(ams_c)::value;
        switch (d) {
            case Decay::none: adam_multi_impl<T, Decay::none, A>(ts, count, s, nthreads); break;
            case Decay::l2: adam_multi_impl<T, Decay::l2, A>(ts, count, s, nthreads); break;
            case Decay::decoupled:
                adam_multi_impl<T, Decay::decoupled, A>(ts, count, s, nthreads);
                break;
        }
    };
    c.amsgrad ? run(std::true_type{}) : run(std::false_type{});
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
