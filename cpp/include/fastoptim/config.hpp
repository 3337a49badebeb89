// fastoptim public C++ API: hyperparameter structs, tensor descriptors and their checks.
//
// Everything here is plain data. The kernels that consume it live in
// fastoptim/kernels.hpp; the Python bindings fill the same structs, so C++ and Python
// users run exactly the same update math.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

namespace fastoptim {

// torch.optim.SGD semantics: weight decay is L2 added to the gradient; the first step
// with momentum copies the gradient into the buffer (no dampening on that step).
struct SGDConfig {
    double lr = 1e-3;
    double momentum = 0.0;
    double dampening = 0.0;
    double weight_decay = 0.0;
    bool nesterov = false;
    bool maximize = false;
    bool first_step = false;  // true: momentum_buffer is uninitialised and gets the gradient
    // Every gradient element is read as grad * grad_scale (the torch adapter folds AMP's
    // 1/scale and the clip-by-global-norm factor in here); the gradient is not written.
    double grad_scale = 1.0;
};

// torch.optim.Adam / AdamW semantics. `step` is the step number being taken (1 for the
// first update); it drives the bias corrections and is an int64 so it never stalls.
struct AdamConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    std::int64_t step = 1;
    bool decoupled_weight_decay = false;  // false: Adam (L2 into the gradient); true: AdamW
    bool amsgrad = false;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// The factor every kernel reads its gradient with: -1 for maximize, times grad_scale.
template <class Config>
constexpr double grad_factor(const Config& c) {
    return (c.maximize ? -1.0 : 1.0) * c.grad_scale;
}

// One tensor of a multi-tensor SGD update. momentum_buffer may be null when momentum == 0.
template <class T>
struct SGDTensor {
    T* param;
    const T* grad;
    T* momentum_buffer;
    std::size_t n;
};

// One tensor of a multi-tensor Adam update. max_exp_avg_sq may be null unless amsgrad.
template <class T>
struct AdamTensor {
    T* param;
    const T* grad;
    T* exp_avg;
    T* exp_avg_sq;
    T* max_exp_avg_sq;
    std::size_t n;
};

// torch.optim.RMSprop semantics: square_avg = alpha * square_avg + (1 - alpha) g^2; centered
// subtracts grad_avg^2 under the root; eps is added after the root; momentum keeps a buffer
// of g / (root + eps). Weight decay is L2 added to the gradient.
struct RMSpropConfig {
    double lr = 1e-2;
    double alpha = 0.99;
    double eps = 1e-8;
    double weight_decay = 0.0;
    double momentum = 0.0;
    bool centered = false;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// torch.optim.Adagrad semantics: sum += g^2; p -= clr * g / (sqrt(sum) + eps) with
// clr = lr / (1 + (step - 1) * lr_decay). `step` is the step being taken (1 first), int64.
struct AdagradConfig {
    double lr = 1e-2;
    double lr_decay = 0.0;
    double weight_decay = 0.0;
    double eps = 1e-10;
    std::int64_t step = 1;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// torch.optim.Adamax semantics: m = lerp(m, g, 1 - beta1); u = max(beta2 u, |g| + eps);
// p -= lr / (1 - beta1^step) * m / u. Weight decay is L2 added to the gradient. `step` is
// the step being taken (1 first), int64.
struct AdamaxConfig {
    double lr = 2e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    std::int64_t step = 1;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// One tensor of a multi-tensor Adamax update (`exp_inf` is torch's state name).
template <class T>
struct AdamaxTensor {
    T* param;
    const T* grad;
    T* exp_avg;
    T* exp_inf;
    std::size_t n;
};

// torch.optim.NAdam semantics (Dozat 2016, with torch's momentum schedule
// mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay))). `mu_product` is the product
// mu_1 ... mu_step including this step's mu: the caller keeps it (torch keeps it per
// parameter, in its scalar dtype) and passes it in. `step` is the step being taken.
struct NAdamConfig {
    double lr = 2e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    double momentum_decay = 4e-3;
    double mu_product = 1.0;
    std::int64_t step = 1;
    bool decoupled_weight_decay = false;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// torch.optim.RAdam semantics (Liu et al. 2020): the adaptive step is used only when the
// variance of the adaptive learning rate is tractable (rho_t > 5).
struct RAdamConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    std::int64_t step = 1;
    bool decoupled_weight_decay = false;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// torch.optim.Adadelta semantics (Zeiler 2012, with torch's lr factor).
struct AdadeltaConfig {
    double lr = 1.0;
    double rho = 0.9;
    double eps = 1e-6;
    double weight_decay = 0.0;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// torch.optim.Rprop semantics (Riedmiller & Braun 1993, the variant without weight
// backtracking): per-element step sizes grow by etaplus while the gradient keeps its sign,
// shrink by etaminus when it flips (and that step is skipped), clamped to
// [step_size_min, step_size_max].
struct RpropConfig {
    double etaminus = 0.5;
    double etaplus = 1.2;
    double step_size_min = 1e-6;
    double step_size_max = 50.0;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// torch.optim.ASGD semantics (Polyak & Juditsky 1992): p *= 1 - lambd * eta;
// p -= eta * g; ax += mu * (p - ax) (ax = p when mu == 1). eta and mu are the caller's
// per-parameter scalars from the previous step (torch's state['eta'], state['mu']).
struct ASGDConfig {
    double lambd = 1e-4;
    double weight_decay = 0.0;
    double eta = 1e-2;
    double mu = 1.0;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as the
// lion-pytorch package computes it: p *= 1 - lr * wd; p -= lr * sign(beta1 m + (1 - beta1) g);
// m = beta2 m + (1 - beta2) g.
struct LionConfig {
    double lr = 1e-4;
    double beta1 = 0.9;
    double beta2 = 0.99;
    double weight_decay = 0.0;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// AdEMAMix (Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better, Faster, Older"), as
// pytorch-optimizer 4.1.0 computes it: Adam's update plus alpha_t times a slow EMA (beta3_t)
// of the gradient, alpha and beta3 warmed up over t_alpha_beta3 steps (0: no warm-up).
// Weight decay: L2 into the gradient, or decoupled (p *= 1 - wd * lr, or 1 - wd with
// fixed_decay).
struct AdEMAMixConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double beta3 = 0.9999;
    double alpha = 5.0;
    double t_alpha_beta3 = 0.0;
    double eps = 1e-8;
    double weight_decay = 0.0;
    std::int64_t step = 1;
    bool weight_decouple = false;
    bool fixed_decay = false;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// One tensor of a multi-tensor AdEMAMix update (pytorch-optimizer's state names).
template <class T>
struct AdEMAMixTensor {
    T* param;
    const T* grad;
    T* exp_avg;
    T* exp_avg_sq;
    T* exp_avg_slow;
    std::size_t n;
};

// Schedule-Free AdamW and SGD (Defazio et al. 2024, "The Road Less Scheduled"), as
// schedulefree 1.4.1's AdamWScheduleFree / SGDScheduleFree compute one step. The
// parameters hold the gradient point y; z is the base sequence, x (the averaged point used
// for evaluation) is never stored: y = (1 - beta1) z + beta1 x. The caller computes the
// step's scalars from the group's schedule state (k, lr_max, weight_sum), as schedulefree
// does in Python floats: `lr` is the scheduled (warmed-up) learning rate, `ckp1` the
// averaging weight of this step, `bias_correction2` = 1 - beta2^(k+1).
struct ScheduleFreeAdamWConfig {
    double lr = 0.0025;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;  // L2 at y, added to the normalized gradient
    double ckp1 = 1.0;
    double bias_correction2 = 1.0;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// Schedule-Free SGD: as above without the second moment (momentum plays beta1's part).
struct ScheduleFreeSGDConfig {
    double lr = 1.0;
    double momentum = 0.9;
    double weight_decay = 0.0;
    double ckp1 = 1.0;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// One tensor of a multi-tensor Schedule-Free AdamW update (schedulefree's state names).
template <class T>
struct ScheduleFreeAdamWTensor {
    T* param;
    const T* grad;
    T* z;
    T* exp_avg_sq;
    std::size_t n;
};

// One tensor of a multi-tensor Schedule-Free SGD update.
template <class T>
struct ScheduleFreeSGDTensor {
    T* param;
    const T* grad;
    T* z;
    std::size_t n;
};

// LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"), as
// pytorch-optimizer 4.1.0's Lamb computes it (rectify=False, pre_norm=False): Adam moments
// (grad_averaging: m += (1 - beta1) g, else m += g), no bias correction of v, the update
// u = m / (sqrt(v) + eps) (+ weight_decay * p for L2 decay) scaled per tensor by the trust
// ratio min(|p|, clamp) / (|u| + eps) (1 if either norm is 0, or with adam=True) and by
// lr / (1 - beta1^step). Decoupled decay (weight_decouple) first: p *= 1 - wd * lr (1 - wd
// with fixed_decay). Tensors: MomentsTensor (exp_avg, exp_avg_sq).
struct LambConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-6;
    double weight_decay = 0.0;
    double clamp = 10.0;  // upper clamp of the weight norm (pytorch-optimizer's Lamb.clamp)
    std::int64_t step = 1;
    bool weight_decouple = true;
    bool fixed_decay = false;
    bool grad_averaging = true;
    bool adam = false;
    bool maximize = false;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// LARS (You et al. 2017, "Large Batch Training of Convolutional Networks"), as
// pytorch-optimizer 4.1.0's LARS computes it. With `trust` (the front ends pass it for
// parameters of more than one dimension, as pytorch-optimizer decides): per tensor,
// r = trust_coefficient |p| / (|g| + weight_decay |p|) (1 if |p| or the denominator is 0),
// g = (g + weight_decay p) r; without it g is used as it is (no decay). Then SGD momentum
// (m = momentum m + (1 - dampening) g, the buffer starting at zero; Nesterov: g + momentum m)
// and p -= lr g. Tensors: SGDTensor (momentum_buffer may be null when momentum == 0).
struct LarsConfig {
    double lr = 1e-3;
    double weight_decay = 0.0;
    double momentum = 0.9;
    double dampening = 0.0;
    double trust_coefficient = 1e-3;
    bool nesterov = false;
    bool maximize = false;
    bool trust = true;
    double grad_scale = 1.0;  // gradients are read as grad * grad_scale (see SGDConfig)
};

// One tensor of a multi-tensor Lion update.
template <class T>
struct LionTensor {
    T* param;
    const T* grad;
    T* exp_avg;
    std::size_t n;
};

// One tensor of a multi-tensor Rprop update.
template <class T>
struct RpropTensor {
    T* param;
    const T* grad;
    T* prev;
    T* step_size;
    std::size_t n;
};

// One tensor of a multi-tensor ASGD update (ax: the averaged parameter).
template <class T>
struct ASGDTensor {
    T* param;
    const T* grad;
    T* ax;
    std::size_t n;
};

// One tensor of a multi-tensor NAdam or RAdam update (torch's state names).
template <class T>
struct MomentsTensor {
    T* param;
    const T* grad;
    T* exp_avg;
    T* exp_avg_sq;
    std::size_t n;
};

// One tensor of a multi-tensor Adadelta update.
template <class T>
struct AdadeltaTensor {
    T* param;
    const T* grad;
    T* square_avg;
    T* acc_delta;
    std::size_t n;
};

// One tensor of a multi-tensor RMSprop update. momentum_buffer may be null unless
// momentum > 0; grad_avg may be null unless centered.
template <class T>
struct RMSpropTensor {
    T* param;
    const T* grad;
    T* square_avg;
    T* momentum_buffer;
    T* grad_avg;
    std::size_t n;
};

// One tensor of a multi-tensor Adagrad update (`sum` is torch's state name).
template <class T>
struct AdagradTensor {
    T* param;
    const T* grad;
    T* sum;
    std::size_t n;
};

// Adafactor as torch.optim.Adafactor computes it (Shazeer & Stern 2018): 1 - beta2_t =
// step^beta2_decay; rho = min(lr, 1 / sqrt(step)); alpha = max(eps2, RMS(p)) rho; a matrix
// (or a stack of them: the last two dimensions) keeps row and column means of g^2, a vector
// or scalar the full g^2 average; u = g / max(sqrt(v_hat), eps1); p *= 1 - lr weight_decay;
// p -= alpha / max(1, RMS(u) / d) u. eps1 < 0 stands for torch's None (machine epsilon).
struct AdafactorConfig {
    double lr = 1e-2;
    double beta2_decay = -0.8;
    double eps1 = -1.0;
    double eps2 = 1e-3;
    double d = 1.0;
    double weight_decay = 0.0;
    std::int64_t step = 1;
    bool maximize = false;
};

// One tensor of a multi-tensor Adafactor update: factored when row_var is set (param is
// [batch, rows, cols], row_var [batch, rows], col_var [batch, cols]), else variance [n].
template <class T>
struct AdafactorTensor {
    T* param;
    const T* grad;
    T* row_var;
    T* col_var;
    T* variance;
    std::size_t n, batch, rows, cols;
};

// Muon's elementwise parts (torch.optim.Muon): the momentum buffer and the matrix to
// orthogonalize, then p = p (1 - lr weight_decay) - adjusted_lr O.
struct MuonConfig {
    double lr = 1e-3;
    double weight_decay = 0.1;
    double momentum = 0.95;
    bool nesterov = true;
};

template <class T>
struct MuonTensor {
    T* out;  // the matrix to orthogonalize
    const T* grad;
    T* momentum_buffer;
    std::size_t n;
};

template <class T>
struct MuonUpdateTensor {
    T* param;
    const T* update;  // the orthogonalized matrix O
    double alpha;     // -adjusted lr
    std::size_t n;
};

// torch.optim.SparseAdam on the rows a sparse gradient touches; `step` is the step taken.
struct SparseAdamConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    std::int64_t step = 1;
    bool maximize = false;
};

namespace detail {
inline bool bad_nonneg(double x) { return !(x >= 0.0) || std::isinf(x); }
inline std::string num(double x) { return std::to_string(x); }
}  // namespace detail

// Returns an empty string when the config is valid, else a message naming the parameter.
inline std::string validate(const SGDConfig& c) {
    using detail::bad_nonneg;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (bad_nonneg(c.momentum))
        return "momentum must be a finite number >= 0, got " + detail::num(c.momentum);
    if (!(c.dampening >= 0.0 && c.dampening <= 1.0))
        return "dampening must be in [0, 1], got " + detail::num(c.dampening);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    if (c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0))
        return "nesterov requires momentum > 0 and dampening == 0";
    return {};
}

inline std::string validate(const AdamConfig& c) {
    using detail::bad_nonneg;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (!(c.beta1 >= 0.0 && c.beta1 < 1.0))
        return "betas[0] must be in [0, 1), got " + detail::num(c.beta1);
    if (!(c.beta2 >= 0.0 && c.beta2 < 1.0))
        return "betas[1] must be in [0, 1), got " + detail::num(c.beta2);
    if (bad_nonneg(c.eps)) return "eps must be a finite number >= 0, got " + detail::num(c.eps);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    if (c.step < 1) return "step must be >= 1, got " + std::to_string(c.step);
    return {};
}

inline std::string validate(const RMSpropConfig& c) {
    using detail::bad_nonneg;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (!(c.alpha >= 0.0 && c.alpha <= 1.0))
        return "alpha must be in [0, 1], got " + detail::num(c.alpha);
    if (bad_nonneg(c.eps)) return "eps must be a finite number >= 0, got " + detail::num(c.eps);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    if (bad_nonneg(c.momentum))
        return "momentum must be a finite number >= 0, got " + detail::num(c.momentum);
    return {};
}

inline std::string validate(const AdagradConfig& c) {
    using detail::bad_nonneg;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (bad_nonneg(c.lr_decay))
        return "lr_decay must be a finite number >= 0, got " + detail::num(c.lr_decay);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    if (bad_nonneg(c.eps)) return "eps must be a finite number >= 0, got " + detail::num(c.eps);
    if (c.step < 1) return "step must be >= 1, got " + std::to_string(c.step);
    return {};
}

namespace detail {
// lr, betas, eps, weight_decay and step: the checks every Adam-like config shares.
template <class C>
std::string validate_adam_like(const C& c) {
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + num(c.lr);
    if (!(c.beta1 >= 0.0 && c.beta1 < 1.0))
        return "betas[0] must be in [0, 1), got " + num(c.beta1);
    if (!(c.beta2 >= 0.0 && c.beta2 < 1.0))
        return "betas[1] must be in [0, 1), got " + num(c.beta2);
    if (bad_nonneg(c.eps)) return "eps must be a finite number >= 0, got " + num(c.eps);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + num(c.weight_decay);
    if (c.step < 1) return "step must be >= 1, got " + std::to_string(c.step);
    return {};
}
}  // namespace detail

inline std::string validate(const NAdamConfig& c) {
    std::string e = detail::validate_adam_like(c);
    if (!e.empty()) return e;
    if (detail::bad_nonneg(c.momentum_decay))
        return "momentum_decay must be a finite number >= 0, got " + detail::num(c.momentum_decay);
    if (!(c.mu_product >= 0.0 && c.mu_product < 1.0))
        return "mu_product must be in [0, 1), got " + detail::num(c.mu_product);
    return {};
}

inline std::string validate(const RAdamConfig& c) { return detail::validate_adam_like(c); }

inline std::string validate(const AdadeltaConfig& c) {
    using detail::bad_nonneg;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (!(c.rho >= 0.0 && c.rho <= 1.0))
        return "rho must be in [0, 1], got " + detail::num(c.rho);
    if (bad_nonneg(c.eps)) return "eps must be a finite number >= 0, got " + detail::num(c.eps);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    return {};
}

inline std::string validate(const AdEMAMixConfig& c) {
    std::string e = detail::validate_adam_like(c);
    if (!e.empty()) return e;
    if (!(c.beta3 >= 0.0 && c.beta3 < 1.0))
        return "betas[2] must be in [0, 1), got " + detail::num(c.beta3);
    if (detail::bad_nonneg(c.alpha))
        return "alpha must be a finite number >= 0, got " + detail::num(c.alpha);
    if (detail::bad_nonneg(c.t_alpha_beta3))
        return "t_alpha_beta3 must be a finite number >= 0 (0: no warm-up), got " +
               detail::num(c.t_alpha_beta3);
    return {};
}

inline std::string validate(const ScheduleFreeAdamWConfig& c) {
    using detail::bad_nonneg;
    using detail::num;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + num(c.lr);
    // 0 < beta1: eval() moves to x with weight 1 - 1/beta1
    if (!(c.beta1 > 0.0 && c.beta1 < 1.0))
        return "betas[0] must be in (0, 1), got " + num(c.beta1);
    if (!(c.beta2 >= 0.0 && c.beta2 < 1.0))
        return "betas[1] must be in [0, 1), got " + num(c.beta2);
    if (bad_nonneg(c.eps)) return "eps must be a finite number >= 0, got " + num(c.eps);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + num(c.weight_decay);
    if (!(c.ckp1 >= 0.0 && c.ckp1 <= 1.0)) return "ckp1 must be in [0, 1], got " + num(c.ckp1);
    if (!(c.bias_correction2 > 0.0 && c.bias_correction2 <= 1.0))
        return "bias_correction2 must be in (0, 1], got " + num(c.bias_correction2);
    return {};
}

inline std::string validate(const ScheduleFreeSGDConfig& c) {
    using detail::bad_nonneg;
    using detail::num;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + num(c.lr);
    if (!(c.momentum > 0.0 && c.momentum < 1.0))
        return "momentum must be in (0, 1), got " + num(c.momentum);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + num(c.weight_decay);
    if (!(c.ckp1 >= 0.0 && c.ckp1 <= 1.0)) return "ckp1 must be in [0, 1], got " + num(c.ckp1);
    return {};
}

inline std::string validate(const LambConfig& c) {
    std::string e = detail::validate_adam_like(c);
    if (!e.empty()) return e;
    if (!(c.clamp > 0.0)) return "clamp must be a number > 0, got " + detail::num(c.clamp);
    return {};
}

inline std::string validate(const LarsConfig& c) {
    using detail::bad_nonneg;
    using detail::num;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + num(c.lr);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + num(c.weight_decay);
    if (!(c.momentum >= 0.0 && c.momentum <= 1.0))
        return "momentum must be in [0, 1], got " + num(c.momentum);
    if (!(c.dampening >= 0.0 && c.dampening <= 1.0))
        return "dampening must be in [0, 1], got " + num(c.dampening);
    if (bad_nonneg(c.trust_coefficient))
        return "trust_coefficient must be a finite number >= 0, got " + num(c.trust_coefficient);
    return {};
}

inline std::string validate(const LionConfig& c) {
    using detail::bad_nonneg;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (!(c.beta1 >= 0.0 && c.beta1 <= 1.0))
        return "betas[0] must be in [0, 1], got " + detail::num(c.beta1);
    if (!(c.beta2 >= 0.0 && c.beta2 <= 1.0))
        return "betas[1] must be in [0, 1], got " + detail::num(c.beta2);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    return {};
}

inline std::string validate(const RpropConfig& c) {
    if (!(0.0 < c.etaminus && c.etaminus < 1.0 && 1.0 < c.etaplus && !std::isinf(c.etaplus)))
        return "etas must satisfy 0 < etaminus < 1 < etaplus, got (" + detail::num(c.etaminus) +
               ", " + detail::num(c.etaplus) + ")";
    if (!(c.step_size_min >= 0.0 && c.step_size_max >= c.step_size_min))
        return "step_sizes must satisfy 0 <= min <= max, got (" + detail::num(c.step_size_min) +
               ", " + detail::num(c.step_size_max) + ")";
    return {};
}

inline std::string validate(const ASGDConfig& c) {
    using detail::bad_nonneg;
    if (bad_nonneg(c.lambd)) return "lambd must be a finite number >= 0, got " + detail::num(c.lambd);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    if (bad_nonneg(c.eta)) return "eta must be a finite number >= 0, got " + detail::num(c.eta);
    if (!(c.mu > 0.0 && c.mu <= 1.0)) return "mu must be in (0, 1], got " + detail::num(c.mu);
    return {};
}

inline std::string validate(const AdafactorConfig& c) {
    if (detail::bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (!(c.beta2_decay <= 0.0) || std::isinf(c.beta2_decay))
        return "beta2_decay must be a finite number <= 0, got " + detail::num(c.beta2_decay);
    if (!(c.eps1 >= 0.0 || c.eps1 == -1.0) || std::isinf(c.eps1))
        return "eps1 must be a finite number >= 0 (or -1 for None), got " + detail::num(c.eps1);
    if (detail::bad_nonneg(c.eps2)) return "eps2 must be a finite number >= 0, got " + detail::num(c.eps2);
    if (!(c.d >= 1.0) || std::isinf(c.d)) return "d must be a finite number >= 1, got " + detail::num(c.d);
    if (detail::bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    if (c.step < 1) return "step must be >= 1, got " + std::to_string(c.step);
    return {};
}

inline std::string validate(const MuonConfig& c) {
    if (detail::bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (detail::bad_nonneg(c.momentum))
        return "momentum must be a finite number >= 0, got " + detail::num(c.momentum);
    if (detail::bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    return {};
}

inline std::string validate(const SparseAdamConfig& c) {
    if (!(c.lr > 0.0) || std::isinf(c.lr)) return "lr must be a finite number > 0, got " + detail::num(c.lr);
    if (!(c.beta1 >= 0.0 && c.beta1 < 1.0)) return "beta1 must be in [0, 1), got " + detail::num(c.beta1);
    if (!(c.beta2 >= 0.0 && c.beta2 < 1.0)) return "beta2 must be in [0, 1), got " + detail::num(c.beta2);
    if (!(c.eps > 0.0) || std::isinf(c.eps)) return "eps must be a finite number > 0, got " + detail::num(c.eps);
    if (c.step < 1) return "step must be >= 1, got " + std::to_string(c.step);
    return {};
}

inline std::string validate(const AdamaxConfig& c) {
    using detail::bad_nonneg;
    if (bad_nonneg(c.lr)) return "lr must be a finite number >= 0, got " + detail::num(c.lr);
    if (!(c.beta1 >= 0.0 && c.beta1 < 1.0))
        return "betas[0] must be in [0, 1), got " + detail::num(c.beta1);
    if (!(c.beta2 >= 0.0 && c.beta2 < 1.0))
        return "betas[1] must be in [0, 1), got " + detail::num(c.beta2);
    if (bad_nonneg(c.eps)) return "eps must be a finite number >= 0, got " + detail::num(c.eps);
    if (bad_nonneg(c.weight_decay))
        return "weight_decay must be a finite number >= 0, got " + detail::num(c.weight_decay);
    if (c.step < 1) return "step must be >= 1, got " + std::to_string(c.step);
    return {};
}

}  // namespace fastoptim
