// Optimizer kernels that are not purely elementwise: Adafactor (factored second moment,
// per-tensor RMS scaling and update clipping), Muon's elementwise parts (momentum and the
// scaled update; its Newton-Schulz products run in BLAS), and SparseAdam's row update.
//
// Contract: plain loops on raw pointers, outputs first. Every reduction is cut into fixed
// chunks (independent of the thread count), each summed in double into its own slot, the
// slots added in order afterwards; row and column sums are computed whole by one thread.
// So results are bitwise identical for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "fastoptim/config.hpp"
#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kFactoredChunk = 16384;     // elements per reduction chunk
constexpr std::size_t kMinPerThreadFactored = 32768;

// torch's lerp: start + w (end - start) for |w| < 0.5, else end - (end - start)(1 - w).
template <class T>
inline T lerp_torch(T start, T end, T w) {
    return std::abs(w) < T(0.5) ? start + w * (end - start)
                                : end - (end - start) * (T(1) - w);
}

namespace detail_factored {

// One unit of work of an Adafactor phase: tensor i, kind, element or row/column range.
struct Task {
    std::size_t tensor;
    int kind;  // 0: sum of p^2 chunk; 1: rows; 2: columns; 3: vector chunk
    std::size_t begin, end;
};

template <class F>
void run_tasks(const std::vector<Task>& tasks, std::size_t total, int nthreads, F&& f) {
    for_each_chunk(tasks.size(), threads_for(total, nthreads, kMinPerThreadFactored),
                   [&](std::size_t c) { f(tasks[c], c); });
}

}  // namespace detail_factored

// One Adafactor step over `count` tensors (torch.optim.Adafactor, Shazeer & Stern 2018, with
// torch's lr and eps1 conventions). A factored tensor is [batch, rows, cols] with row_var
// [batch, rows] and col_var [batch, cols]; an unfactored one (1-D or 0-d) has variance [n].
// c.step is the step being taken; validate(c) holds.
template <class T>
void adafactor_multi(const AdafactorTensor<T>* ts, std::size_t count, const AdafactorConfig& c,
                     int nthreads) {
    using detail_factored::Task;
    const double stepf = static_cast<double>(c.step);
    const T w = T(std::pow(stepf, c.beta2_decay));        // 1 - beta2_t = step^beta2_decay
    const double rho = std::min(c.lr, 1.0 / std::sqrt(stepf));
    // eps1 < 0 stands for torch's None: the machine epsilon of T
    const double e1 = c.eps1 < 0.0 ? double(std::numeric_limits<T>::epsilon()) : c.eps1;
    const T eps1 = T(e1), eps1sq = T(e1 * e1), sign = T(c.maximize ? -1 : 1);
    const T decay = T(1.0 - c.lr * c.weight_decay);
    const bool wd = c.weight_decay != 0.0;

    // Phase 1: sum of p^2 per chunk; row and column means of g^2 lerped into the factors;
    // the vector variance lerped and the sum of its update's squares per chunk.
    std::vector<Task> tasks;
    std::vector<std::size_t> p_first(count + 1), u_first(count + 1);
    std::size_t total = 0;
    for (std::size_t i = 0; i < count; ++i) {
        const AdafactorTensor<T>& t = ts[i];
        p_first[i] = tasks.size();
        for (std::size_t b = 0; b < t.n; b += kFactoredChunk)
            tasks.push_back({i, 0, b, std::min(t.n, b + kFactoredChunk)});
        total += t.n;
    }
    p_first[count] = tasks.size();
    const std::size_t n_p = tasks.size();
    for (std::size_t i = 0; i < count; ++i) {
        const AdafactorTensor<T>& t = ts[i];
        u_first[i] = tasks.size();
        if (t.row_var) {
            const std::size_t R = t.batch * t.rows;
            const std::size_t step_r = std::max<std::size_t>(1, kFactoredChunk / std::max<std::size_t>(1, t.cols));
            for (std::size_t b = 0; b < R; b += step_r) tasks.push_back({i, 1, b, std::min(R, b + step_r)});
            const std::size_t C = t.batch * t.cols;
            const std::size_t step_c = std::max<std::size_t>(64, kFactoredChunk / std::max<std::size_t>(1, t.rows));
            for (std::size_t b = 0; b < C; b += step_c) tasks.push_back({i, 2, b, std::min(C, b + step_c)});
        } else {
            for (std::size_t b = 0; b < t.n; b += kFactoredChunk)
                tasks.push_back({i, 3, b, std::min(t.n, b + kFactoredChunk)});
        }
        total += t.n;
    }
    u_first[count] = tasks.size();
    std::vector<double> part(tasks.size(), 0.0);
    detail_factored::run_tasks(tasks, total, nthreads, [&](const Task& k, std::size_t slot) {
        const AdafactorTensor<T>& t = ts[k.tensor];
        if (k.kind == 0) {  // sum of p^2 (the RMS of the parameter before this step)
            double acc = 0.0;
            const T* __restrict p = t.param;
#pragma omp simd reduction(+ : acc)
            for (std::size_t j = k.begin; j < k.end; ++j) acc += double(p[j]) * double(p[j]);
            part[slot] = acc;
        } else if (k.kind == 1) {  // row means of g^2: row_var.lerp_(mean_j g^2, w)
            for (std::size_t r = k.begin; r < k.end; ++r) {
                const T* __restrict g = t.grad + r * t.cols;
                double acc = 0.0;
#pragma omp simd reduction(+ : acc)
                for (std::size_t j = 0; j < t.cols; ++j) acc += double(g[j]) * double(g[j]);
                t.row_var[r] = lerp_torch(t.row_var[r], T(acc / double(t.cols)), w);
            }
        } else if (k.kind == 2) {  // column means of g^2: col_var.lerp_(mean_i g^2, w)
            // columns [begin, end) of the flattened [batch, cols]: one batch at a time
            std::size_t x = k.begin;
            while (x < k.end) {
                const std::size_t bi = x / t.cols, c0 = x % t.cols;
                const std::size_t c1 = std::min(t.cols, c0 + (k.end - x));
                const std::size_t wdt = c1 - c0;
                std::vector<double> acc(wdt, 0.0);
                const T* base = t.grad + bi * t.rows * t.cols;
                for (std::size_t r = 0; r < t.rows; ++r) {
                    const T* __restrict g = base + r * t.cols + c0;
                    double* __restrict a = acc.data();
#pragma omp simd
                    for (std::size_t j = 0; j < wdt; ++j) a[j] += double(g[j]) * double(g[j]);
                }
                T* cv = t.col_var + bi * t.cols + c0;
                for (std::size_t j = 0; j < wdt; ++j)
                    cv[j] = lerp_torch(cv[j], T(acc[j] / double(t.rows)), w);
                x += wdt;
            }
        } else {  // vector: variance.lerp_(g^2, w); sum of (g / max(sqrt(v), eps1))^2
            const T* __restrict g = t.grad;
            T* __restrict v = t.variance;
            double acc = 0.0;
#pragma omp simd reduction(+ : acc)
            for (std::size_t j = k.begin; j < k.end; ++j) {
                const T gj = sign * g[j];
                const T vj = lerp_torch(v[j], gj * gj, w);
                v[j] = vj;
                const T u = gj * (T(1) / std::sqrt(std::max(vj, eps1sq)));
                acc += double(u) * double(u);
            }
            part[slot] = acc;
        }
    });

    // The per-tensor scalars: alpha from the RMS of p; the row factor's mean per batch.
    std::vector<double> alpha(count);
    std::vector<std::size_t> mean_off(count + 1, 0);
    for (std::size_t i = 0; i < count; ++i)
        mean_off[i + 1] = mean_off[i] + (ts[i].row_var ? ts[i].batch : 0);
    std::vector<T> row_mean(mean_off[count]);
    for (std::size_t i = 0; i < count; ++i) {
        const AdafactorTensor<T>& t = ts[i];
        double s = 0.0;
        for (std::size_t k = p_first[i]; k < p_first[i + 1]; ++k) s += part[k];
        const double rms = t.n ? std::sqrt(s) / std::sqrt(double(t.n)) : 0.0;
        alpha[i] = std::max(c.eps2, rms) * rho;
        if (!t.row_var) continue;
        for (std::size_t b = 0; b < t.batch; ++b) {  // row_var.mean(dim=-2), clamped at eps1
            double m = 0.0;
            for (std::size_t r = 0; r < t.rows; ++r) m += double(t.row_var[b * t.rows + r]);
            row_mean[mean_off[i] + b] = std::max(T(m / double(t.rows)), eps1);
        }
    }
    (void)n_p;

    // The factored update u = g / max(sqrt(R C / mean(R)), eps1) at element j of tensor t.
    auto factored_u = [&](const AdafactorTensor<T>& t, std::size_t i, std::size_t r,
                          std::size_t bi, const T* __restrict g, std::size_t j0,
                          std::size_t j1, T* __restrict out) {
        const T rv = t.row_var[r], rm = row_mean[mean_off[i] + bi];
        const T* __restrict cv = t.col_var + bi * t.cols;
#pragma omp simd
        for (std::size_t j = j0; j < j1; ++j) {
            const T ve = std::max((rv * cv[j]) / rm, eps1sq);
            out[j - j0] = (sign * g[j]) * (T(1) / std::sqrt(ve));
        }
    };

    // Phase 2: sum of u^2 of the factored tensors, by fixed row blocks.
    std::vector<Task> t2;
    std::vector<std::size_t> f_first(count + 1);
    for (std::size_t i = 0; i < count; ++i) {
        f_first[i] = t2.size();
        const AdafactorTensor<T>& t = ts[i];
        if (!t.row_var) continue;
        const std::size_t R = t.batch * t.rows;
        const std::size_t step_r = std::max<std::size_t>(1, kFactoredChunk / std::max<std::size_t>(1, t.cols));
        for (std::size_t b = 0; b < R; b += step_r) t2.push_back({i, 1, b, std::min(R, b + step_r)});
    }
    f_first[count] = t2.size();
    std::vector<double> part2(t2.size(), 0.0);
    detail_factored::run_tasks(t2, total / 2, nthreads, [&](const Task& k, std::size_t slot) {
        const AdafactorTensor<T>& t = ts[k.tensor];
        std::vector<T> u(t.cols);
        double acc = 0.0;
        for (std::size_t r = k.begin; r < k.end; ++r) {
            factored_u(t, k.tensor, r, r / t.rows, t.grad + r * t.cols, 0, t.cols, u.data());
            const T* __restrict q = u.data();
#pragma omp simd reduction(+ : acc)
            for (std::size_t j = 0; j < t.cols; ++j) acc += double(q[j]) * double(q[j]);
        }
        part2[slot] = acc;
    });

    // Step sizes: -alpha / max(1, RMS(u) / d), in the tensors' precision (torch's add_ alpha).
    std::vector<T> scale(count);
    for (std::size_t i = 0; i < count; ++i) {
        const AdafactorTensor<T>& t = ts[i];
        double s = 0.0;
        if (t.row_var) {
            for (std::size_t k = f_first[i]; k < f_first[i + 1]; ++k) s += part2[k];
        } else {
            for (std::size_t k = u_first[i]; k < u_first[i + 1]; ++k) s += part[k];
        }
        const double denom = t.n ? std::max(1.0, std::sqrt(s) / (std::sqrt(double(t.n)) * c.d)) : 1.0;
        scale[i] = T(-alpha[i] / denom);
    }

    // Phase 3: p = p * (1 - lr wd) + scale * u, elementwise.
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadFactored,
        [&](std::size_t i, std::size_t b, std::size_t e) {
            const AdafactorTensor<T>& t = ts[i];
            const T s = scale[i];
            T* __restrict p = t.param;
            if (!t.row_var) {
                const T* __restrict g = t.grad;
                const T* __restrict v = t.variance;
#pragma omp simd
                for (std::size_t j = b; j < e; ++j) {
                    const T u = (sign * g[j]) * (T(1) / std::sqrt(std::max(v[j], eps1sq)));
                    const T q = wd ? p[j] * decay : p[j];
                    p[j] = q + s * u;
                }
                return;
            }
            T buf[kAlign];
            std::size_t x = b;
            while (x < e) {  // row by row, at most kAlign elements at a time
                const std::size_t r = x / t.cols, j0 = x % t.cols;
                const std::size_t j1 = std::min({t.cols, j0 + (e - x), j0 + kAlign});
                factored_u(t, i, r, r / t.rows, t.grad + r * t.cols, j0, j1, buf);
                T* __restrict pr = p + r * t.cols;
                for (std::size_t j = j0; j < j1; ++j) {
                    const T q = wd ? pr[j] * decay : pr[j];
                    pr[j] = q + s * buf[j - j0];
                }
                x += j1 - j0;
            }
        });
}

// Muon's momentum (torch.optim.Muon): buf.lerp_(g, 1 - momentum); the matrix to
// orthogonalize, out = g.lerp(buf, momentum) with nesterov, else buf.
template <class T>
void muon_momentum_multi(const MuonTensor<T>* ts, std::size_t count, const MuonConfig& c,
                         int nthreads) {
    const T w = T(1.0 - c.momentum), mom = T(c.momentum);
    const bool nesterov = c.nesterov;
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadFactored,
        [&](std::size_t i, std::size_t b, std::size_t e) {
            const MuonTensor<T>& t = ts[i];
            const T* __restrict g = t.grad;
            T* __restrict buf = t.momentum_buffer;
            T* __restrict out = t.out;
#pragma omp simd
            for (std::size_t j = b; j < e; ++j) {
                const T m = lerp_torch(buf[j], g[j], w);
                buf[j] = m;
                out[j] = nesterov ? lerp_torch(g[j], m, mom) : m;
            }
        });
}

// Muon's update: p = p * (1 - lr weight_decay) + alpha * o, alpha = -adjusted lr per tensor.
template <class T>
void muon_update_multi(const MuonUpdateTensor<T>* ts, std::size_t count, const MuonConfig& c,
                       int nthreads) {
    const T decay = T(1.0 - c.lr * c.weight_decay);
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadFactored,
        [&](std::size_t i, std::size_t b, std::size_t e) {
            const MuonUpdateTensor<T>& t = ts[i];
            T* __restrict p = t.param;
            const T* __restrict o = t.update;
            const T a = T(t.alpha);
#pragma omp simd
            for (std::size_t j = b; j < e; ++j) p[j] = p[j] * decay + a * o[j];
        });
}

// SparseAdam on the touched rows (torch.optim.SparseAdam): rows[k] (unique) names a row of
// p, m, v ([*, cols]); values[k * cols ...] is its gradient. Only those rows change.
template <class T>
void sparse_adam_rows(T* p, T* m, T* v, const std::int64_t* rows, const T* values,
                      std::size_t nrows, std::size_t cols, const SparseAdamConfig& c,
                      int nthreads) {
    const double bc1 = 1.0 - std::pow(c.beta1, double(c.step));
    const double bc2 = 1.0 - std::pow(c.beta2, double(c.step));
    const T neg_step = T(-(c.lr * std::sqrt(bc2) / bc1));
    const T w1 = T(1.0 - c.beta1), w2 = T(1.0 - c.beta2), eps = T(c.eps);
    const T sign = T(c.maximize ? -1 : 1);
    const std::size_t per = std::max<std::size_t>(1, kMinPerThreadFactored / std::max<std::size_t>(1, cols));
    const std::size_t nchunks = (nrows + per - 1) / per;
    for_each_chunk(nchunks, threads_for(nrows * cols, nthreads, kMinPerThreadFactored),
                   [&](std::size_t ch) {
        for (std::size_t k = ch * per; k < std::min(nrows, (ch + 1) * per); ++k) {
            const std::size_t off = static_cast<std::size_t>(rows[k]) * cols;
            T* __restrict pr = p + off;
            T* __restrict mr = m + off;
            T* __restrict vr = v + off;
            const T* __restrict g = values + k * cols;
#pragma omp simd
            for (std::size_t j = 0; j < cols; ++j) {
                const T gj = sign * g[j];
                const T m0 = mr[j], v0 = vr[j];
                const T mu = (gj - m0) * w1;            // (g - m_old) (1 - beta1)
                const T vu = (gj * gj - v0) * w2;       // (g^2 - v_old) (1 - beta2)
                const T mn = m0 + mu, vn = v0 + vu;
                mr[j] = mn;
                vr[j] = vn;
                const T upd = neg_step * ((mu + m0) / (std::sqrt(vu + v0) + eps));
                pr[j] = pr[j] + upd;
            }
        }
    });
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
