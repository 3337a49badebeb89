// Adam variants with their own update rule: NAdam, RAdam and AdEMAMix, one fused pass per
// tensor.
//
// Same contract as optimizers.hpp: readable `omp simd` loops, no intrinsics, compiled once
// per SIMD target. The math follows torch.optim's single-tensor implementations operation
// by operation (torch/optim/nadam.py, torch/optim/radam.py); the per-step scalars (bias
// corrections, momentum schedule, rectification) are computed in double from the int64
// step, as torch computes them in Python floats.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "fastoptim/config.hpp"
#include "fastoptim/kernels/optimizers.hpp"
#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kMinPerThreadMoments = 32768;

// Scalars of one NAdam or RAdam step, in the tensors' precision.
template <class T>
struct MomentsScalars {
    T sign, weight_decay, keep, one_minus_beta1, beta2, one_minus_beta2, eps;
    T a, b, c, d;  // NAdam: bc2, grad coefficient, exp_avg coefficient; RAdam: bc1, lr, sqrt(bc2), rect
};

// p, g, m, v: [n]. Dozat (2016), "Incorporating Nesterov Momentum into Adam".
template <class T, Decay D>
void nadam_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                 std::size_t n, const MomentsScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, keep = s.keep, w1 = s.one_minus_beta1;
    const T b2 = s.beta2, w2 = s.one_minus_beta2, eps = s.eps;
    const T bc2 = s.a, cg = s.b, cm = s.c;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];
        T pi = p[i];
        if constexpr (D == Decay::l2) gi = gi + wd * pi;       // L2 into the gradient
        if constexpr (D == Decay::decoupled) pi = pi * keep;   // p *= 1 - lr * wd
        const T mi = m[i] + w1 * (gi - m[i]);                  // m.lerp_(g, 1 - beta1)
        const T vi = v[i] * b2 + w2 * gi * gi;                 // v = b2 v + (1 - b2) g^2
        const T denom = std::sqrt(vi / bc2) + eps;             // (v / bc2).sqrt() + eps
        pi = pi + cg * gi / denom;                             // addcdiv_(g, denom, cg)
        p[i] = pi + cm * mi / denom;                           // addcdiv_(m, denom, cm)
        m[i] = mi;
        v[i] = vi;
    }
}

// p, g, m, v: [n]. Liu et al. (2020), "On the Variance of the Adaptive Learning Rate and
// Beyond"; RECT: the rectified adaptive step (rho_t > 5), else plain momentum SGD.
template <class T, Decay D, bool RECT>
void radam_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                 std::size_t n, const MomentsScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, keep = s.keep, w1 = s.one_minus_beta1;
    const T b2 = s.beta2, w2 = s.one_minus_beta2, eps = s.eps;
    const T bc1 = s.a, lr = s.b, sqrt_bc2 = s.c, rect = s.d;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];
        T pi = p[i];
        if constexpr (D == Decay::l2) gi = gi + wd * pi;
        if constexpr (D == Decay::decoupled) pi = pi * keep;
        const T mi = m[i] + w1 * (gi - m[i]);
        const T vi = v[i] * b2 + w2 * gi * gi;
        T u = (mi / bc1) * lr;                                 // bias-corrected m * lr
        if constexpr (RECT) u = u * (sqrt_bc2 / (std::sqrt(vi) + eps)) * rect;
        p[i] = pi - u;
        m[i] = mi;
        v[i] = vi;
    }
}

template <class T, class Range>
void moments_multi_impl(const MomentsTensor<T>* ts, std::size_t count, const MomentsScalars<T>& s,
                        int nthreads, Range range) {
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadMoments,
        [ts, &s, range](std::size_t i, std::size_t b, std::size_t e) {
            const MomentsTensor<T>& t = ts[i];
            range(t.param + b, t.grad + b, t.exp_avg + b, t.exp_avg_sq + b, e - b, s);
        });
}

template <class T, class C>
MomentsScalars<T> moments_scalars(const C& c) {
    MomentsScalars<T> s{};
    s.sign = T(grad_factor(c));
    s.weight_decay = T(c.weight_decay);
    s.keep = T(1.0 - c.lr * c.weight_decay);
    s.one_minus_beta1 = T(1.0 - c.beta1);
    s.beta2 = T(c.beta2);
    s.one_minus_beta2 = T(1.0 - c.beta2);
    s.eps = T(c.eps);
    return s;
}

template <class C>
Decay decay_of(const C& c) {
    return c.weight_decay == 0.0 ? Decay::none
           : c.decoupled_weight_decay ? Decay::decoupled : Decay::l2;
}

// The scalars of one NAdam step (shared with the format kernel, state_formats.hpp).
template <class T>
MomentsScalars<T> nadam_scalars(const NAdamConfig& c) {
    const double step = static_cast<double>(c.step);
    const double mu = c.beta1 * (1.0 - 0.5 * std::pow(0.96, step * c.momentum_decay));
    const double mu_next = c.beta1 * (1.0 - 0.5 * std::pow(0.96, (step + 1.0) * c.momentum_decay));
    MomentsScalars<T> s = moments_scalars<T>(c);
    s.a = T(1.0 - std::pow(c.beta2, step));
    s.b = T(-c.lr * (1.0 - mu) / (1.0 - c.mu_product));
    s.c = T((-c.lr * mu_next) / (1.0 - c.mu_product * mu_next));
    return s;
}

// One NAdam step over `count` tensors. The config must satisfy validate(c).
template <class T>
void nadam_multi(const MomentsTensor<T>* ts, std::size_t count, const NAdamConfig& c,
                 int nthreads) {
    const MomentsScalars<T> s = nadam_scalars<T>(c);
    auto run = [&](auto d) {
        constexpr Decay D = decltype(d)::value;
        moments_multi_impl(ts, count, s, nthreads, &nadam_range<T, D>);
    };
    switch (decay_of(c)) {
        case Decay::none: run(std::integral_constant<Decay, Decay::none>{}); break;
        case Decay::l2: run(std::integral_constant<Decay, Decay::l2>{}); break;
        case Decay::decoupled: run(std::integral_constant<Decay, Decay::decoupled>{}); break;
    }
}

// The scalars of one RAdam step; `rect`: whether the rectified step applies (rho_t > 5).
template <class T>
MomentsScalars<T> radam_scalars(const RAdamConfig& c, bool& rect) {
    const double step = static_cast<double>(c.step);
    const double bc1 = 1.0 - std::pow(c.beta1, step);
    const double bc2 = 1.0 - std::pow(c.beta2, step);
    const double rho_inf = 2.0 / (1.0 - c.beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * step * std::pow(c.beta2, step) / bc2;
    rect = rho_t > 5.0;
    MomentsScalars<T> s = moments_scalars<T>(c);
    s.a = T(bc1);
    s.b = T(c.lr);
    s.c = T(std::sqrt(bc2));
    s.d = rect ? T(std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                             ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)))
               : T(1);
    return s;
}

// One RAdam step over `count` tensors. The config must satisfy validate(c).
template <class T>
void radam_multi(const MomentsTensor<T>* ts, std::size_t count, const RAdamConfig& c,
                 int nthreads) {
    bool rect = false;
    const MomentsScalars<T> s = radam_scalars<T>(c, rect);
    auto run = [&](auto d, auto r) {
        constexpr Decay D = decltype(d)::value;
        moments_multi_impl(ts, count, s, nthreads, &radam_range<T, D, decltype(r)::value>);
    };
    auto with_rect = [&](auto d) { rect ? run(d, std::true_type{}) : run(d, std::false_type{}); };
    switch (decay_of(c)) {
        case Decay::none: with_rect(std::integral_constant<Decay, Decay::none>{}); break;
        case Decay::l2: with_rect(std::integral_constant<Decay, Decay::l2>{}); break;
        case Decay::decoupled: with_rect(std::integral_constant<Decay, Decay::decoupled>{}); break;
    }
}

// Scalars of one AdEMAMix step, in the tensors' precision.
template <class T>
struct AdEMAMixScalars {
    T sign, weight_decay, keep, one_minus_beta1, beta2, one_minus_beta2, one_minus_beta3;
    T bc1, sqrt_bc2, alpha, eps, neg_lr;
};

// p, g, m1, v, m2: [n]. Pagliardini et al. (2024), as pytorch-optimizer's AdEMAMix.
template <class T, Decay D>
void ademamix_range(T* __restrict p, const T* __restrict g, T* __restrict m1, T* __restrict v,
                    T* __restrict m2, std::size_t n, const AdEMAMixScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, keep = s.keep, w1 = s.one_minus_beta1;
    const T b2 = s.beta2, w2 = s.one_minus_beta2, w3 = s.one_minus_beta3;
    const T bc1 = s.bc1, sbc2 = s.sqrt_bc2, alpha = s.alpha, eps = s.eps, neg_lr = s.neg_lr;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];
        T pi = p[i];
        if constexpr (D == Decay::l2) gi = gi + wd * pi;          // grad.add_(p, alpha=wd)
        if constexpr (D == Decay::decoupled) pi = pi * keep;      // p.mul_(1 - wd * lr)
        const T a = m1[i] + w1 * (gi - m1[i]);                    // exp_avg.lerp_(g, 1 - b1)
        const T vi = v[i] * b2 + w2 * gi * gi;                    // exp_avg_sq
        const T b = m2[i] + w3 * (gi - m2[i]);                    // exp_avg_slow.lerp_(g, 1 - b3)
        const T denom = std::sqrt(vi) / sbc2 + eps;
        const T u = a / bc1 + alpha * b;                          // m1 / bc1 + alpha_t m2
        p[i] = pi + neg_lr * u / denom;                           // addcdiv_(u, denom, -lr)
        m1[i] = a;
        v[i] = vi;
        m2[i] = b;
    }
}

// The scalars of one AdEMAMix step (shared with the format kernel, state_formats.hpp).
template <class T>
AdEMAMixScalars<T> ademamix_scalars(const AdEMAMixConfig& c) {
    const double step = static_cast<double>(c.step);
    double alpha = c.alpha, beta3 = c.beta3;
    if (c.t_alpha_beta3 > 0.0) {  // warm-up of alpha and beta3 (pytorch-optimizer's schedules)
        const double r = step / c.t_alpha_beta3;
        alpha = std::min(step * c.alpha / c.t_alpha_beta3, c.alpha);
        const double l1 = std::log(c.beta1), l3 = std::log(c.beta3);
        beta3 = std::min(std::exp(l1 * l3 / ((1.0 - r) * l3 + r * l1)), c.beta3);
    }
    AdEMAMixScalars<T> s{};
    s.sign = T(grad_factor(c));
    s.weight_decay = T(c.weight_decay);
    s.keep = T(1.0 - c.weight_decay * (c.fixed_decay ? 1.0 : c.lr));
    s.one_minus_beta1 = T(1.0 - c.beta1);
    s.beta2 = T(c.beta2);
    s.one_minus_beta2 = T(1.0 - c.beta2);
    s.one_minus_beta3 = T(1.0 - beta3);
    s.bc1 = T(1.0 - std::pow(c.beta1, step));
    s.sqrt_bc2 = T(std::sqrt(1.0 - std::pow(c.beta2, step)));
    s.alpha = T(alpha);
    s.eps = T(c.eps);
    s.neg_lr = T(-c.lr);
    return s;
}

inline Decay ademamix_decay(const AdEMAMixConfig& c) {
    return c.weight_decay == 0.0 ? Decay::none
           : c.weight_decouple   ? Decay::decoupled
                                 : Decay::l2;
}

// One AdEMAMix step over `count` tensors. The config must satisfy validate(c).
template <class T>
void ademamix_multi(const AdEMAMixTensor<T>* ts, std::size_t count, const AdEMAMixConfig& c,
                    int nthreads) {
    const AdEMAMixScalars<T> s = ademamix_scalars<T>(c);
    auto run = [&](auto d) {
        constexpr Decay D = decltype(d)::value;
        for_each_range(
            count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadMoments,
            [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
                const AdEMAMixTensor<T>& t = ts[i];
                ademamix_range<T, D>(t.param + b, t.grad + b, t.exp_avg + b, t.exp_avg_sq + b,
                                     t.exp_avg_slow + b, e - b, s);
            });
    };
    switch (ademamix_decay(c)) {
        case Decay::none: run(std::integral_constant<Decay, Decay::none>{}); break;
        case Decay::l2: run(std::integral_constant<Decay, Decay::l2>{}); break;
        case Decay::decoupled: run(std::integral_constant<Decay, Decay::decoupled>{}); break;
    }
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
