// Per-coordinate adaptive optimizers: RMSprop, Adagrad and Adamax, one fused pass per tensor.
//
// Same contract as optimizers.hpp: readable `omp simd` loops, no intrinsics, compiled once
// per SIMD target. The math follows torch.optim's single-tensor implementations
// operation by operation (torch/optim/rmsprop.py, torch/optim/adagrad.py, torch/optim/adamax.py), so fastoptim
// and torch can run in lockstep.
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>

#include "fastoptim/config.hpp"
#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kMinPerThreadRMSprop = 32768;
constexpr std::size_t kMinPerThreadAdagrad = 32768;
constexpr std::size_t kMinPerThreadAdamax = 32768;
constexpr std::size_t kMinPerThreadAdadelta = 32768;
constexpr std::size_t kMinPerThreadRprop = 32768;
constexpr std::size_t kMinPerThreadASGD = 65536;
constexpr std::size_t kMinPerThreadLion = 65536;

// Scalars of one RMSprop step, in the tensors' precision.
template <class T>
struct RMSpropScalars {
    T sign, weight_decay, alpha, one_minus_alpha, eps, momentum, neg_lr;
};

// p, g, sq, buf, gavg: [n]. buf is touched only when MOMENTUM, gavg only when CENTERED.
template <class T, bool WD, bool CENTERED, bool MOMENTUM>
void rmsprop_range(T* __restrict p, const T* __restrict g, T* __restrict sq,
                   T* __restrict buf, T* __restrict gavg, std::size_t n,
                   const RMSpropScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, a = s.alpha, w = s.one_minus_alpha;
    const T eps = s.eps, mom = s.momentum, neg_lr = s.neg_lr;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];                               // maximize flips the gradient
        if constexpr (WD) gi = gi + wd * p[i];            // L2: grad + wd * param
        const T si = sq[i] * a + w * gi * gi;             // square_avg.mul_(a).addcmul_(g, g, 1-a)
        sq[i] = si;
        T avg;
        if constexpr (CENTERED) {
            const T ga = gavg[i] + w * (gi - gavg[i]);    // grad_avg.lerp_(g, 1 - a)
            gavg[i] = ga;
            avg = std::sqrt(si - ga * ga) + eps;          // eps after the root, as torch
        } else {
            avg = std::sqrt(si) + eps;
        }
        if constexpr (MOMENTUM) {
            const T b = buf[i] * mom + gi / avg;          // buf.mul_(mom).addcdiv_(g, avg)
            buf[i] = b;
            p[i] = p[i] + neg_lr * b;
        } else {
            p[i] = p[i] + neg_lr * gi / avg;               // addcdiv_: (value * g) / avg
        }
    }
}

template <class T, bool WD, bool CENTERED, bool MOMENTUM>
void rmsprop_multi_impl(const RMSpropTensor<T>* ts, std::size_t count,
                        const RMSpropScalars<T>& s, int nthreads) {
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadRMSprop,
        [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
            const RMSpropTensor<T>& t = ts[i];
            rmsprop_range<T, WD, CENTERED, MOMENTUM>(
                t.param + b, t.grad + b, t.square_avg + b,
                MOMENTUM ? t.momentum_buffer + b : nullptr, CENTERED ? t.grad_avg + b : nullptr,
                e - b, s);
        });
}

// One RMSprop step over `count` tensors. The config must satisfy validate(c).
template <class T>
void rmsprop_multi(const RMSpropTensor<T>* ts, std::size_t count, const RMSpropConfig& c,
                   int nthreads) {
    const RMSpropScalars<T> s{T(grad_factor(c)), T(c.weight_decay), T(c.alpha),
                              T(1.0 - c.alpha),      T(c.eps),          T(c.momentum),
                              T(-c.lr)};
    // 2 x 2 x 2 instantiations: weight decay, centered, momentum.
    auto run = [&](auto wd_c, auto cen_c, auto mom_c) {
        rmsprop_multi_impl<T, decltype(wd_c)::value, decltype(cen_c)::value,
                           decltype(mom_c)::value>(ts, count, s, nthreads);
    };
    using Y = std::true_type;
    using F = std::false_type;
    auto with_mom = [&](auto wd_c, auto cen_c) {
        c.momentum > 0.0 ? run(wd_c, cen_c, Y{}) : run(wd_c, cen_c, F{});
    };
    auto with_cen = [&](auto wd_c) { c.centered ? with_mom(wd_c, Y{}) : with_mom(wd_c, F{}); };
    c.weight_decay != 0.0 ? with_cen(Y{}) : with_cen(F{});
}

// Scalars of one Adagrad step, in the tensors' precision.
template <class T>
struct AdagradScalars {
    T sign, weight_decay, eps, neg_clr;
};

// p, g, sum: [n].
template <class T, bool WD>
void adagrad_range(T* __restrict p, const T* __restrict g, T* __restrict sum, std::size_t n,
                   const AdagradScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, eps = s.eps, neg_clr = s.neg_clr;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];                          // maximize flips the gradient
        if constexpr (WD) gi = gi + wd * p[i];       // L2: grad + wd * param
        const T si = sum[i] + gi * gi;               // state_sum.addcmul_(g, g)
        sum[i] = si;
        p[i] = p[i] + neg_clr * gi / (std::sqrt(si) + eps);  // addcdiv_: (-clr * g) / std
    }
}

template <class T, bool WD>
void adagrad_multi_impl(const AdagradTensor<T>* ts, std::size_t count,
                        const AdagradScalars<T>& s, int nthreads) {
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadAdagrad,
        [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
            const AdagradTensor<T>& t = ts[i];
            adagrad_range<T, WD>(t.param + b, t.grad + b, t.sum + b, e - b, s);
        });
}

// One Adagrad step over `count` tensors. The config must satisfy validate(c).
template <class T>
void adagrad_multi(const AdagradTensor<T>* ts, std::size_t count, const AdagradConfig& c,
                   int nthreads) {
    // clr in double from the int64 step, as torch computes it in Python floats.
    const double clr = c.lr / (1.0 + static_cast<double>(c.step - 1) * c.lr_decay);
    const AdagradScalars<T> s{T(grad_factor(c)), T(c.weight_decay), T(c.eps), T(-clr)};
    c.weight_decay != 0.0 ? adagrad_multi_impl<T, true>(ts, count, s, nthreads)
                          : adagrad_multi_impl<T, false>(ts, count, s, nthreads);
}

// Scalars of one Adamax step, in the tensors' precision.
template <class T>
struct AdamaxScalars {
    T sign, weight_decay, one_minus_beta1, beta2, eps, neg_clr;
};

// p, g, m, u: [n]. Kingma & Ba (2015), section 7.1, as torch.optim.Adamax computes it.
template <class T, bool WD>
void adamax_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict u,
                  std::size_t n, const AdamaxScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, w1 = s.one_minus_beta1, b2 = s.beta2;
    const T eps = s.eps, neg_clr = s.neg_clr;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];                               // maximize flips the gradient
        if constexpr (WD) gi = gi + wd * p[i];            // L2: grad + wd * param
        const T mi = m[i] + w1 * (gi - m[i]);             // exp_avg.lerp_(g, 1 - beta1)
        const T a = u[i] * b2, b = std::abs(gi) + eps;    // torch.maximum(u * b2, |g| + eps)
        const T ui = (a < b || b != b) ? b : a;           // NaN-propagating, as torch.maximum
        m[i] = mi;
        u[i] = ui;
        p[i] = p[i] + neg_clr * mi / ui;                  // addcdiv_: (-clr * m) / u
    }
}

template <class T, bool WD>
void adamax_multi_impl(const AdamaxTensor<T>* ts, std::size_t count, const AdamaxScalars<T>& s,
                       int nthreads) {
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadAdamax,
        [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
            const AdamaxTensor<T>& t = ts[i];
            adamax_range<T, WD>(t.param + b, t.grad + b, t.exp_avg + b, t.exp_inf + b, e - b,
                                s);
        });
}

// One Adamax step over `count` tensors. The config must satisfy validate(c).
// The scalars of one Adamax step (shared with the format kernel, state_formats.hpp).
template <class T>
AdamaxScalars<T> adamax_scalars(const AdamaxConfig& c) {
    // clr in double from the int64 step, as torch computes it in Python floats.
    const double clr = c.lr / (1.0 - std::pow(c.beta1, static_cast<double>(c.step)));
    return {T(grad_factor(c)), T(c.weight_decay), T(1.0 - c.beta1),
            T(c.beta2),        T(c.eps),          T(-clr)};
}

template <class T>
void adamax_multi(const AdamaxTensor<T>* ts, std::size_t count, const AdamaxConfig& c,
                  int nthreads) {
    const AdamaxScalars<T> s = adamax_scalars<T>(c);
    c.weight_decay != 0.0 ? adamax_multi_impl<T, true>(ts, count, s, nthreads)
                          : adamax_multi_impl<T, false>(ts, count, s, nthreads);
}

// Scalars of one Adadelta step, in the tensors' precision.
template <class T>
struct AdadeltaScalars {
    T sign, weight_decay, rho, one_minus_rho, eps, neg_lr;
};

// p, g, sq, acc: [n]. Zeiler (2012), "ADADELTA: An Adaptive Learning Rate Method".
template <class T, bool WD>
void adadelta_range(T* __restrict p, const T* __restrict g, T* __restrict sq,
                    T* __restrict acc, std::size_t n, const AdadeltaScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, rho = s.rho, w = s.one_minus_rho;
    const T eps = s.eps, neg_lr = s.neg_lr;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];                                   // maximize flips the gradient
        if constexpr (WD) gi = gi + wd * p[i];                // L2: grad + wd * param
        const T si = sq[i] * rho + w * gi * gi;               // square_avg = rho sq + (1-rho) g^2
        const T delta = std::sqrt(acc[i] + eps) / std::sqrt(si + eps) * gi;
        acc[i] = acc[i] * rho + w * delta * delta;            // acc_delta, same average
        sq[i] = si;
        p[i] = p[i] + neg_lr * delta;                         // param.add_(delta, alpha=-lr)
    }
}

template <class T>
AdadeltaScalars<T> adadelta_scalars(const AdadeltaConfig& c) {
    return {T(grad_factor(c)), T(c.weight_decay), T(c.rho), T(1.0 - c.rho), T(c.eps), T(-c.lr)};
}

// One Adadelta step over `count` tensors. The config must satisfy validate(c).
template <class T>
void adadelta_multi(const AdadeltaTensor<T>* ts, std::size_t count, const AdadeltaConfig& c,
                    int nthreads) {
    const AdadeltaScalars<T> s = adadelta_scalars<T>(c);
    auto run = [&](auto wd_c) {
        constexpr bool W = decltype(wd_c)::value;
        for_each_range(
            count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadAdadelta,
            [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
                const AdadeltaTensor<T>& t = ts[i];
                adadelta_range<T, W>(t.param + b, t.grad + b, t.square_avg + b,
                                     t.acc_delta + b, e - b, s);
            });
    };
    c.weight_decay != 0.0 ? run(std::true_type{}) : run(std::false_type{});
}

// Scalars of one Rprop step, in the tensors' precision.
template <class T>
struct RpropScalars {
    T sign, etaminus, etaplus, lo, hi;
};

// p, g, prev, ss: [n]. Riedmiller & Braun (1993); torch.optim.Rprop operation by operation
// (a NaN product counts as "no sign", factor 1, and sign(NaN) = 0 as in torch.sign).
template <class T>
void rprop_range(T* __restrict p, const T* __restrict g, T* __restrict prev, T* __restrict ss,
                 std::size_t n, const RpropScalars<T>& s) {
    const T sign = s.sign, em = s.etaminus, ep = s.etaplus, lo = s.lo, hi = s.hi;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];
        const T prod = gi * prev[i];
        const T f = prod > T(0) ? ep : (prod < T(0) ? em : T(1));
        T si = ss[i] * f;
        si = si < lo ? lo : si;                             // clamp_(min, max), NaN kept
        si = si > hi ? hi : si;
        if (f == em) gi = T(0);                             // sign flipped: skip this step
        const T sg = gi > T(0) ? T(1) : (gi < T(0) ? T(-1) : T(0));
        p[i] = p[i] + T(-1) * sg * si;                      // addcmul_(sign(g), ss, value=-1)
        ss[i] = si;
        prev[i] = gi;
    }
}

// One Rprop step over `count` tensors. The config must satisfy validate(c).
template <class T>
void rprop_multi(const RpropTensor<T>* ts, std::size_t count, const RpropConfig& c,
                 int nthreads) {
    const RpropScalars<T> s{T(grad_factor(c)), T(c.etaminus), T(c.etaplus),
                            T(c.step_size_min), T(c.step_size_max)};
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadRprop,
        [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
            const RpropTensor<T>& t = ts[i];
            rprop_range<T>(t.param + b, t.grad + b, t.prev + b, t.step_size + b, e - b, s);
        });
}

// Scalars of one ASGD step, in the tensors' precision.
template <class T>
struct ASGDScalars {
    T sign, weight_decay, keep, neg_eta, mu;
};

// p, g, ax: [n]. Polyak & Juditsky (1992), as torch.optim.ASGD computes it.
template <class T, bool WD, bool AVERAGE>
void asgd_range(T* __restrict p, const T* __restrict g, T* __restrict ax, std::size_t n,
                const ASGDScalars<T>& s) {
    const T sign = s.sign, wd = s.weight_decay, keep = s.keep, neg_eta = s.neg_eta, mu = s.mu;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        T gi = sign * g[i];
        if constexpr (WD) gi = gi + wd * p[i];              // L2: grad + wd * param
        T pi = p[i] * keep;                                 // p *= 1 - lambd * eta
        pi = pi + neg_eta * gi;                             // p.add_(g, alpha=-eta)
        p[i] = pi;
        if constexpr (AVERAGE) ax[i] = ax[i] + (pi - ax[i]) * mu;  // ax += (p - ax) * mu
        else ax[i] = pi;                                    // mu == 1: ax = p
    }
}

// One ASGD step over `count` tensors. The config must satisfy validate(c).
template <class T>
void asgd_multi(const ASGDTensor<T>* ts, std::size_t count, const ASGDConfig& c, int nthreads) {
    const ASGDScalars<T> s{T(grad_factor(c)), T(c.weight_decay),
                           T(1.0 - c.lambd * c.eta), T(-c.eta), T(c.mu)};
    auto run = [&](auto wd_c, auto avg_c) {
        constexpr bool W = decltype(wd_c)::value, A = decltype(avg_c)::value;
        for_each_range(
            count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadASGD,
            [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
                const ASGDTensor<T>& t = ts[i];
                asgd_range<T, W, A>(t.param + b, t.grad + b, t.ax + b, e - b, s);
            });
    };
    auto with_avg = [&](auto wd_c) {
        c.mu != 1.0 ? run(wd_c, std::true_type{}) : run(wd_c, std::false_type{});
    };
    c.weight_decay != 0.0 ? with_avg(std::true_type{}) : with_avg(std::false_type{});
}

// Scalars of one Lion step, in the tensors' precision.
template <class T>
struct LionScalars {
    T sign, keep, beta1, one_minus_beta1, beta2, one_minus_beta2, neg_lr;
};

// p, g, m: [n]. Chen et al. (2023); lion-pytorch's update_fn operation by operation.
template <class T>
void lion_range(T* __restrict p, const T* __restrict g, T* __restrict m, std::size_t n,
                const LionScalars<T>& s) {
    const T sign = s.sign, keep = s.keep, b1 = s.beta1, w1 = s.one_minus_beta1;
    const T b2 = s.beta2, w2 = s.one_minus_beta2, neg_lr = s.neg_lr;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        const T gi = sign * g[i];
        const T c = m[i] * b1 + w1 * gi;                     // exp_avg * b1 + (1 - b1) g
        const T u = c > T(0) ? T(1) : (c < T(0) ? T(-1) : T(0));  // sgn_ (NaN -> 0)
        p[i] = p[i] * keep + neg_lr * u;                     // p *= 1 - lr wd; p -= lr u
        m[i] = m[i] * b2 + w2 * gi;                          // exp_avg * b2 + (1 - b2) g
    }
}

template <class T>
LionScalars<T> lion_scalars(const LionConfig& c) {
    return {T(grad_factor(c)), T(1.0 - c.lr * c.weight_decay), T(c.beta1),
            T(1.0 - c.beta1),  T(c.beta2),                     T(1.0 - c.beta2), T(-c.lr)};
}

// One Lion step over `count` tensors. The config must satisfy validate(c).
template <class T>
void lion_multi(const LionTensor<T>* ts, std::size_t count, const LionConfig& c, int nthreads) {
    const LionScalars<T> s = lion_scalars<T>(c);
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadLion,
        [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
            const LionTensor<T>& t = ts[i];
            lion_range<T>(t.param + b, t.grad + b, t.exp_avg + b, e - b, s);
        });
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
