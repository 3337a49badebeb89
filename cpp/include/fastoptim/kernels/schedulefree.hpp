// Schedule-Free AdamW and SGD (Defazio et al. 2024, "The Road Less Scheduled"), one fused
// pass per tensor, and the lerp that moves parameters between the y and x points.
//
// Same contract as optimizers.hpp: readable `omp simd` loops, no intrinsics, compiled once
// per SIMD target, work split by for_each_range (bitwise identical for any thread count).
// The math follows schedulefree 1.4.1's AdamWScheduleFree.step / SGDScheduleFree.step
// operation by operation (https://github.com/facebookresearch/schedule_free), with one
// difference: schedulefree normalizes the gradient in place (grad.div_(denom)); here the
// gradient is only read.
//
// torch.lerp(a, b, w) is a + w (b - a) when |w| < 0.5 and b - (b - a)(1 - w) otherwise;
// both branches are written base + coeff * (b - a) here (coeff = w or w - 1), which is the
// same number.
#pragma once

#include <cmath>
#include <cstddef>

#include "fastoptim/config.hpp"
#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kMinPerThreadScheduleFree = 32768;

// Scalars of one Schedule-Free step, in the tensors' precision.
template <class T>
struct ScheduleFreeScalars {
    T beta2, one_minus_beta2, bias_correction2, eps, weight_decay;
    T coeff;   // lerp(y, z, ckp1) = base + coeff (z - y)
    T y_rate;  // lr (beta1 (1 - ckp1) - 1): y += y_rate * u
    T neg_lr;  // z -= lr * u
    T grad_scale;  // every gradient is read as grad_scale * g
};

// torch.lerp's branch for weight w, decided and computed in the tensors' precision as
// torch does: |w| >= 0.5 takes base b and coeff w - 1.
template <class T>
bool lerp_big(double w) {
    return !(std::fabs(T(w)) < T(0.5));
}
template <class T>
T lerp_coeff(double w) {
    return lerp_big<T>(w) ? T(T(w) - T(1)) : T(w);
}

template <class T>
ScheduleFreeScalars<T> schedulefree_scalars(double lr, double beta1, double ckp1,
                                            double weight_decay, double grad_scale) {
    ScheduleFreeScalars<T> s{};
    s.grad_scale = T(grad_scale);
    s.weight_decay = T(weight_decay);
    s.coeff = lerp_coeff<T>(ckp1);
    s.y_rate = T(lr * (beta1 * (1.0 - ckp1) - 1.0));
    s.neg_lr = T(-lr);
    return s;
}

// p (= y), g, z, v: [n]. schedulefree's AdamWScheduleFree step for one tensor.
// Z: lerp's base is z (ckp1 >= 0.5); W: weight decay != 0.
template <class T, bool Z, bool W>
void schedulefree_adamw_range(T* __restrict p, const T* __restrict g, T* __restrict z,
                              T* __restrict v, std::size_t n, const ScheduleFreeScalars<T>& s) {
    const T b2 = s.beta2, w2 = s.one_minus_beta2, bc2 = s.bias_correction2, eps = s.eps;
    const T wd = s.weight_decay, coeff = s.coeff, y_rate = s.y_rate, neg_lr = s.neg_lr;
    const T gs = s.grad_scale;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        const T gi = gs * g[i], yi = p[i], zi = z[i];  // (x 1 is exact: unscaled bitwise)
        const T vi = v[i] * b2 + w2 * gi * gi;          // exp_avg_sq.mul_(b2).addcmul_(g, g)
        T u = gi / (std::sqrt(vi / bc2) + eps);         // g / (sqrt(v / bc2) + eps)
        if constexpr (W) u = u + wd * yi;               // decay at y
        const T y1 = (Z ? zi : yi) + coeff * (zi - yi);  // y.lerp_(z, ckp1)
        p[i] = y1 + y_rate * u;                         // y.add_(u, lr (b1 (1 - ckp1) - 1))
        z[i] = zi + neg_lr * u;                         // z.sub_(u, alpha=lr)
        v[i] = vi;
    }
}

// p (= y), g, z: [n]. schedulefree's SGDScheduleFree step for one tensor.
template <class T, bool Z, bool W>
void schedulefree_sgd_range(T* __restrict p, const T* __restrict g, T* __restrict z,
                            std::size_t n, const ScheduleFreeScalars<T>& s) {
    const T wd = s.weight_decay, coeff = s.coeff, y_rate = s.y_rate, neg_lr = s.neg_lr;
    const T gs = s.grad_scale;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        const T yi = p[i], zi = z[i];
        T u = gs * g[i];
        if constexpr (W) u = u + wd * yi;               // grad.add_(y, alpha=wd)
        const T y1 = (Z ? zi : yi) + coeff * (zi - yi);  // y.lerp_(z, ckp1)
        p[i] = y1 + y_rate * u;                         // y.add_(u, lr (m (1 - ckp1) - 1))
        z[i] = zi + neg_lr * u;                         // z.sub_(u, alpha=lr)
    }
}

// Calls body(Z, W) with the compile-time variants the scalars select.
template <class T, class F>
void schedulefree_variants(double ckp1, double weight_decay, F&& body) {
    const bool z = lerp_big<T>(ckp1), w = weight_decay != 0.0;
    if (z) {
        w ? body(std::true_type{}, std::true_type{}) : body(std::true_type{}, std::false_type{});
    } else {
        w ? body(std::false_type{}, std::true_type{}) : body(std::false_type{}, std::false_type{});
    }
}

// One Schedule-Free AdamW step over `count` tensors. The config must satisfy validate(c).
template <class T>
void schedulefree_adamw_multi(const ScheduleFreeAdamWTensor<T>* ts, std::size_t count,
                              const ScheduleFreeAdamWConfig& c, int nthreads) {
    ScheduleFreeScalars<T> s =
        schedulefree_scalars<T>(c.lr, c.beta1, c.ckp1, c.weight_decay, c.grad_scale);
    s.beta2 = T(c.beta2);
    s.one_minus_beta2 = T(1.0 - c.beta2);
    s.bias_correction2 = T(c.bias_correction2);
    s.eps = T(c.eps);
    schedulefree_variants<T>(c.ckp1, c.weight_decay, [&](auto zc, auto wc) {
        constexpr bool Z = decltype(zc)::value, W = decltype(wc)::value;
        for_each_range(
            count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadScheduleFree,
            [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
                const ScheduleFreeAdamWTensor<T>& t = ts[i];
                schedulefree_adamw_range<T, Z, W>(t.param + b, t.grad + b, t.z + b,
                                                  t.exp_avg_sq + b, e - b, s);
            });
    });
}

// One Schedule-Free SGD step over `count` tensors. The config must satisfy validate(c).
template <class T>
void schedulefree_sgd_multi(const ScheduleFreeSGDTensor<T>* ts, std::size_t count,
                            const ScheduleFreeSGDConfig& c, int nthreads) {
    const ScheduleFreeScalars<T> s =
        schedulefree_scalars<T>(c.lr, c.momentum, c.ckp1, c.weight_decay, c.grad_scale);
    schedulefree_variants<T>(c.ckp1, c.weight_decay, [&](auto zc, auto wc) {
        constexpr bool Z = decltype(zc)::value, W = decltype(wc)::value;
        for_each_range(
            count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadScheduleFree,
            [ts, &s](std::size_t i, std::size_t b, std::size_t e) {
                const ScheduleFreeSGDTensor<T>& t = ts[i];
                schedulefree_sgd_range<T, Z, W>(t.param + b, t.grad + b, t.z + b, e - b, s);
            });
    });
}

// a, b: [n]. a = torch.lerp(a, b, w) in place; B: the |w| >= 0.5 branch (base b).
template <class T, bool B>
void lerp_range(T* __restrict a, const T* __restrict b, std::size_t n, T coeff) {
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        const T ai = a[i], bi = b[i];
        a[i] = (B ? bi : ai) + coeff * (bi - ai);
    }
}

// as[i] = lerp(as[i], bs[i], w) for `count` arrays of ns[i] elements (torch.lerp_'s
// formula; Schedule-Free's train()/eval() switch between y and x with it).
template <class T>
void lerp_multi(T* const* as, const T* const* bs, const std::size_t* ns, std::size_t count,
                double w, int nthreads) {
    const bool big = lerp_big<T>(w);
    const T coeff = lerp_coeff<T>(w);
    auto run = [&](auto bc) {
        constexpr bool B = decltype(bc)::value;
        for_each_range(
            count, [ns](std::size_t i) { return ns[i]; }, nthreads, kMinPerThreadScheduleFree,
            [as, bs, coeff](std::size_t i, std::size_t b, std::size_t e) {
                lerp_range<T, B>(as[i] + b, bs[i] + b, e - b, coeff);
            });
    };
    big ? run(std::true_type{}) : run(std::false_type{});
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
