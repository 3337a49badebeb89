// SGD (momentum), RMSprop, Adagrad, Adamax, NAdam, RAdam, Adadelta, Lion and AdEMAMix on
// parameters, gradients and state in any supported format, in one pass (the same scheme as
// adam_formats.hpp).
//
// Each thread walks its share of the tensors in chunks of kFormatChunk elements: the
// parameter, the gradient and every state buffer of the chunk are loaded as float32 (into
// L1 scratch, or used in place when float32), the float32 update of optimizers.hpp /
// adaptive.hpp / adam_variants.hpp runs on the chunk, with the scalars those kernels compute (the same operations as the float32 kernels, so
// fp32-everything is bitwise their result), and each buffer is stored back through its
// format, a q8 block's absmax found before its codes are written. Splits between threads
// fall on kQ8Block boundaries: results are bitwise identical for any thread count.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastoptim/config.hpp"
#include "fastoptim/formats/blocks.hpp"
#include "fastoptim/kernels/adam_formats.hpp"
#include "fastoptim/kernels/adam_variants.hpp"
#include "fastoptim/kernels/adaptive.hpp"
#include "fastoptim/kernels/optimizers.hpp"
#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

// Chunk of tensor t over [b, e): load every buffer, run update(p, g, s0, s1, s2, n), store.
// Buffer j (null when unused) is signed when is_signed[j]; its rounding stream is j + 1.
template <class Update>
void format_state_range(const FormatStateTensor& t, std::size_t b, std::size_t e,
                        std::int64_t step, const bool (&is_signed)[kMaxStateBuffers],
                        Update&& update) {
    alignas(64) float sp[kFormatChunk], sg[kFormatChunk], ss[kMaxStateBuffers][kFormatChunk];
    const Buffer P{t.param, nullptr, nullptr, t.param_format, t.param_rounding, false,
                   rounding_key(t.seed, step, kStreamParam)};
    const Buffer C{t.param_copy, nullptr, nullptr, t.copy_format, Rounding::nearest, false, {}};
    Buffer S[kMaxStateBuffers];
    for (std::size_t j = 0; j < kMaxStateBuffers; ++j) {
        const bool q8 = t.state_format == Format::q8;
        S[j] = Buffer{t.state[j], t.absmax[j],
                      q8 ? (is_signed[j] ? &signed_qcoder() : &unsigned_qcoder()) : nullptr,
                      t.state_format, t.state_rounding, is_signed[j],
                      rounding_key(t.seed, step, static_cast<std::uint32_t>(j + 1))};
    }
    for (std::size_t first = b; first < e; first += kFormatChunk) {
        const std::size_t n = e - first < kFormatChunk ? e - first : kFormatChunk;
        float* p = load_buffer(P, first, n, sp);
        const float* g = load_input(t.grad_format, t.grad, first, n, sg);
        float* s[kMaxStateBuffers];
        for (std::size_t j = 0; j < kMaxStateBuffers; ++j)
            s[j] = t.state[j] ? load_buffer(S[j], first, n, ss[j]) : nullptr;
        update(p, g, s[0], s[1], s[2], n);
        store_buffer(P, first, n, p);
        if (t.param_copy) store_buffer(C, first, n, p);
        for (std::size_t j = 0; j < kMaxStateBuffers; ++j)
            if (t.state[j]) store_buffer(S[j], first, n, s[j]);
    }
}

template <class Update>
void format_state_multi(const FormatStateTensor* ts, std::size_t count, std::int64_t step,
                        const bool (&is_signed)[kMaxStateBuffers], std::size_t min_per_thread,
                        int nthreads, const Update& update) {
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, min_per_thread,
        [ts, step, &is_signed, &update](std::size_t i, std::size_t b, std::size_t e) {
            format_state_range(ts[i], b, e, step, is_signed, update);
        },
        kQ8Block);
}

// SGD: state[0] = momentum_buffer (signed; null without momentum). `step` keys the
// stochastic rounding only.
inline void sgd_format_multi(const FormatStateTensor* ts, std::size_t count, const SGDConfig& c,
                             std::int64_t step, int nthreads) {
    const SGDScalars<float> s{c.maximize ? -1.0f : 1.0f, float(c.weight_decay), float(c.momentum),
                              float(1.0 - c.dampening), float(-c.lr)};
    static constexpr bool sg[kMaxStateBuffers] = {true, true, true};
    auto go = [&](auto wd_c, auto m_c, auto nest_c) {
        constexpr bool W = decltype(wd_c)::value, N = decltype(nest_c)::value;
        constexpr Momentum M = decltype(m_c)::value;
        format_state_multi(ts, count, step, sg, kMinPerThreadAdam, nthreads,
                           [&s](float* p, const float* g, float* buf, float*, float*, std::size_t n) {
                               sgd_range<float, W, M, N>(p, g, buf, n, s);
                           });
    };
    using Y = std::true_type;
    using F = std::false_type;
    using MN = std::integral_constant<Momentum, Momentum::none>;
    using MF = std::integral_constant<Momentum, Momentum::first>;
    using MR = std::integral_constant<Momentum, Momentum::running>;
    const bool wd = c.weight_decay != 0.0;
    if (c.momentum == 0.0) {
        wd ? go(Y{}, MN{}, F{}) : go(F{}, MN{}, F{});
        return;
    }
    auto with_m = [&](auto wd_c, auto nest_c) {
        c.first_step ? go(wd_c, MF{}, nest_c) : go(wd_c, MR{}, nest_c);
    };
    if (wd) c.nesterov ? with_m(Y{}, Y{}) : with_m(Y{}, F{});
    else c.nesterov ? with_m(F{}, Y{}) : with_m(F{}, F{});
}

// RMSprop: state[0] = square_avg (>= 0), state[1] = momentum_buffer (when momentum > 0),
// state[2] = grad_avg (when centered).
inline void rmsprop_format_multi(const FormatStateTensor* ts, std::size_t count,
                                 const RMSpropConfig& c, std::int64_t step, int nthreads) {
    const RMSpropScalars<float> s{c.maximize ? -1.0f : 1.0f, float(c.weight_decay), float(c.alpha),
                                  float(1.0 - c.alpha),      float(c.eps),          float(c.momentum),
                                  float(-c.lr)};
    static constexpr bool sg[kMaxStateBuffers] = {false, true, true};
    auto go = [&](auto wd_c, auto cen_c, auto mom_c) {
        constexpr bool W = decltype(wd_c)::value, CE = decltype(cen_c)::value,
                       MO = decltype(mom_c)::value;
        format_state_multi(ts, count, step, sg, kMinPerThreadRMSprop, nthreads,
                           [&s](float* p, const float* g, float* sq, float* buf, float* ga,
                                std::size_t n) { rmsprop_range<float, W, CE, MO>(p, g, sq, buf, ga, n, s); });
    };
    using Y = std::true_type;
    using F = std::false_type;
    auto with_mom = [&](auto wd_c, auto cen_c) {
        c.momentum > 0.0 ? go(wd_c, cen_c, Y{}) : go(wd_c, cen_c, F{});
    };
    auto with_cen = [&](auto wd_c) { c.centered ? with_mom(wd_c, Y{}) : with_mom(wd_c, F{}); };
    c.weight_decay != 0.0 ? with_cen(Y{}) : with_cen(F{});
}

// Adagrad: state[0] = sum (>= 0).
inline void adagrad_format_multi(const FormatStateTensor* ts, std::size_t count,
                                 const AdagradConfig& c, int nthreads) {
    const double clr = c.lr / (1.0 + static_cast<double>(c.step - 1) * c.lr_decay);
    const AdagradScalars<float> s{c.maximize ? -1.0f : 1.0f, float(c.weight_decay), float(c.eps),
                                  float(-clr)};
    static constexpr bool sg[kMaxStateBuffers] = {false, false, false};
    auto go = [&](auto wd_c) {
        constexpr bool W = decltype(wd_c)::value;
        format_state_multi(ts, count, c.step, sg, kMinPerThreadAdagrad, nthreads,
                           [&s](float* p, const float* g, float* sum, float*, float*,
                                std::size_t n) { adagrad_range<float, W>(p, g, sum, n, s); });
    };
    c.weight_decay != 0.0 ? go(std::true_type{}) : go(std::false_type{});
}

// Calls go(std::integral_constant<Decay, d>{}) for the run-time decay d.
template <class Go>
void with_decay(Decay d, Go&& go) {
    switch (d) {
        case Decay::none: go(std::integral_constant<Decay, Decay::none>{}); break;
        case Decay::l2: go(std::integral_constant<Decay, Decay::l2>{}); break;
        case Decay::decoupled: go(std::integral_constant<Decay, Decay::decoupled>{}); break;
    }
}

// Adamax: state[0] = exp_avg (signed), state[1] = exp_inf (>= 0).
inline void adamax_format_multi(const FormatStateTensor* ts, std::size_t count,
                                const AdamaxConfig& c, int nthreads) {
    const AdamaxScalars<float> s = adamax_scalars<float>(c);
    static constexpr bool sg[kMaxStateBuffers] = {true, false, false};
    auto go = [&](auto wd_c) {
        constexpr bool W = decltype(wd_c)::value;
        format_state_multi(ts, count, c.step, sg, kMinPerThreadAdamax, nthreads,
                           [&s](float* p, const float* g, float* m, float* u, float*,
                                std::size_t n) { adamax_range<float, W>(p, g, m, u, n, s); });
    };
    c.weight_decay != 0.0 ? go(std::true_type{}) : go(std::false_type{});
}

// NAdam: state[0] = exp_avg (signed), state[1] = exp_avg_sq (>= 0); mu_product is the
// caller's scalar, in the config.
inline void nadam_format_multi(const FormatStateTensor* ts, std::size_t count,
                               const NAdamConfig& c, int nthreads) {
    const MomentsScalars<float> s = nadam_scalars<float>(c);
    static constexpr bool sg[kMaxStateBuffers] = {true, false, false};
    with_decay(decay_of(c), [&](auto d) {
        constexpr Decay D = decltype(d)::value;
        format_state_multi(ts, count, c.step, sg, kMinPerThreadMoments, nthreads,
                           [&s](float* p, const float* g, float* m, float* v, float*,
                                std::size_t n) { nadam_range<float, D>(p, g, m, v, n, s); });
    });
}

// RAdam: state[0] = exp_avg (signed), state[1] = exp_avg_sq (>= 0).
inline void radam_format_multi(const FormatStateTensor* ts, std::size_t count,
                               const RAdamConfig& c, int nthreads) {
    bool rect = false;
    const MomentsScalars<float> s = radam_scalars<float>(c, rect);
    static constexpr bool sg[kMaxStateBuffers] = {true, false, false};
    auto go = [&](auto d, auto r) {
        constexpr Decay D = decltype(d)::value;
        constexpr bool R = decltype(r)::value;
        format_state_multi(ts, count, c.step, sg, kMinPerThreadMoments, nthreads,
                           [&s](float* p, const float* g, float* m, float* v, float*,
                                std::size_t n) { radam_range<float, D, R>(p, g, m, v, n, s); });
    };
    with_decay(decay_of(c), [&](auto d) {
        rect ? go(d, std::true_type{}) : go(d, std::false_type{});
    });
}

// Adadelta: state[0] = square_avg, state[1] = acc_delta (both >= 0). `step` keys the
// stochastic rounding only.
inline void adadelta_format_multi(const FormatStateTensor* ts, std::size_t count,
                                  const AdadeltaConfig& c, std::int64_t step, int nthreads) {
    const AdadeltaScalars<float> s = adadelta_scalars<float>(c);
    static constexpr bool sg[kMaxStateBuffers] = {false, false, false};
    auto go = [&](auto wd_c) {
        constexpr bool W = decltype(wd_c)::value;
        format_state_multi(ts, count, step, sg, kMinPerThreadAdadelta, nthreads,
                           [&s](float* p, const float* g, float* sq, float* acc, float*,
                                std::size_t n) { adadelta_range<float, W>(p, g, sq, acc, n, s); });
    };
    c.weight_decay != 0.0 ? go(std::true_type{}) : go(std::false_type{});
}

// Lion: state[0] = exp_avg (signed). `step` keys the stochastic rounding only.
inline void lion_format_multi(const FormatStateTensor* ts, std::size_t count,
                              const LionConfig& c, std::int64_t step, int nthreads) {
    const LionScalars<float> s = lion_scalars<float>(c);
    static constexpr bool sg[kMaxStateBuffers] = {true, true, true};
    format_state_multi(ts, count, step, sg, kMinPerThreadLion, nthreads,
                       [&s](float* p, const float* g, float* m, float*, float*,
                            std::size_t n) { lion_range<float>(p, g, m, n, s); });
}

// AdEMAMix: state[0] = exp_avg (signed), state[1] = exp_avg_sq (>= 0), state[2] =
// exp_avg_slow (signed).
inline void ademamix_format_multi(const FormatStateTensor* ts, std::size_t count,
                                  const AdEMAMixConfig& c, int nthreads) {
    const AdEMAMixScalars<float> s = ademamix_scalars<float>(c);
    static constexpr bool sg[kMaxStateBuffers] = {true, false, true};
    with_decay(ademamix_decay(c), [&](auto d) {
        constexpr Decay D = decltype(d)::value;
        format_state_multi(ts, count, c.step, sg, kMinPerThreadMoments, nthreads,
                           [&s](float* p, const float* g, float* m1, float* v, float* m2,
                                std::size_t n) { ademamix_range<float, D>(p, g, m1, v, m2, n, s); });
    });
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
