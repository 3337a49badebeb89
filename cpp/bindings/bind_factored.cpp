// Python bindings of the non-elementwise optimizer kernels (kernels/factored.hpp):
// adafactor_step, muon_momentum, muon_update and sparse_adam_step. Each checks every array
// and hyperparameter first (TypeError/ValueError naming the argument, nothing touched), then
// releases the GIL for the kernel (safe: the kernel only sees raw pointers into arrays that
// this frame keeps alive).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings/arrays.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

using namespace pybind11::literals;

void raise_invalid(const std::string& message) {
    if (!message.empty()) throw py::value_error(message);
}

// A list argument (list or tuple) of exactly `n` entries.
py::sequence list_of(py::handle obj, const char* name, std::size_t n) {
    if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
        throw py::type_error(std::string(name) + " must be a list, got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    py::sequence s = py::reinterpret_borrow<py::sequence>(obj);
    if (static_cast<std::size_t>(s.size()) != n)
        throw py::value_error(std::string(name) + " has " + std::to_string(s.size()) +
                              " entries but params has " + std::to_string(n));
    return s;
}

std::vector<py::ssize_t> dims_of(const ArrayList& l, std::size_t i) {
    const Buffer& b = l.items[i];
    return {l.dims.begin() + static_cast<std::ptrdiff_t>(b.dim_off),
            l.dims.begin() + static_cast<std::ptrdiff_t>(b.dim_off) + b.ndim};
}

std::string shape_text(const std::vector<py::ssize_t>& d) {
    std::string s = "(";
    for (std::size_t k = 0; k < d.size(); ++k) s += (k ? ", " : "") + std::to_string(d[k]);
    return s + (d.size() == 1 ? ",)" : ")");
}

// One state array of `params[i]` (numpy, the call's dtype, C-contiguous, writeable) with
// exactly the shape `want`, or None where `want_none`.
void* state_of(Gate& gate, py::handle obj, const std::string& name, bool want_none,
               const std::vector<py::ssize_t>& want) {
    if (want_none) {
        if (!obj.is_none())
            throw py::value_error(name + " must be None for this parameter (" +
                                  (want.empty() ? "it is factored" : "it is not factored") + ")");
        return nullptr;
    }
    if (obj.is_none()) throw py::value_error(name + " is required for this parameter");
    py::array a = gate.single(obj, name.c_str(), true);
    std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
    if (got != want)
        throw py::value_error(name + " has shape " + shape_text(got) + " but must have shape " +
                              shape_text(want));
    return a.mutable_data();
}

template <class T>
void run_adafactor(std::vector<AdafactorTensor<T>>& ts, const AdafactorConfig& c) {
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().adafactor;
    py::gil_scoped_release nogil;
    kernel(ts.data(), ts.size(), c, nt);
}

void adafactor_step(py::handle params, py::handle grads, py::handle row_vars,
                    py::handle col_vars, py::handle variances, std::int64_t step, double lr,
                    double beta2_decay, double eps1, double eps2, double d,
                    double weight_decay, bool maximize) {
    AdafactorConfig c;
    c.step = step;
    c.lr = lr;
    c.beta2_decay = beta2_decay;
    c.eps1 = eps1;
    c.eps2 = eps2;
    c.d = d;
    c.weight_decay = weight_decay;
    c.maximize = maximize;
    raise_invalid(validate(c));
    Gate gate;
    ArrayList p = gate.first(params, "params", true);
    ArrayList g = gate.like(grads, "grads", false);
    if (p.single) throw py::type_error("params must be a list of arrays");
    const std::size_t n = p.size();
    py::sequence rv = list_of(row_vars, "row_vars", n), cv = list_of(col_vars, "col_vars", n),
                 vv = list_of(variances, "variances", n);
    struct Raw {
        void *r, *c, *v;
        std::size_t batch, rows, cols;
    };
    std::vector<Raw> raw(n);
    for (std::size_t i = 0; i < n; ++i) {
        const std::vector<py::ssize_t> shape = dims_of(p, i);
        const bool factored = shape.size() >= 2;
        const std::string idx = "[" + std::to_string(i) + "]";
        Raw x{nullptr, nullptr, nullptr, 1, 1, 1};
        if (factored) {
            std::vector<py::ssize_t> rs = shape, cs = shape;
            rs.back() = 1;
            cs[cs.size() - 2] = 1;
            x.r = state_of(gate, rv[i], "row_vars" + idx, false, rs);
            x.c = state_of(gate, cv[i], "col_vars" + idx, false, cs);
            state_of(gate, vv[i], "variances" + idx, true, {});
            for (std::size_t k = 0; k + 2 < shape.size(); ++k) x.batch *= std::size_t(shape[k]);
            x.rows = std::size_t(shape[shape.size() - 2]);
            x.cols = std::size_t(shape.back());
        } else {
            state_of(gate, rv[i], "row_vars" + idx, true, {1});
            state_of(gate, cv[i], "col_vars" + idx, true, {1});
            x.v = state_of(gate, vv[i], "variances" + idx, false, shape);
        }
        raw[i] = x;
    }
    gate.check_no_overlap();
    auto build = [&](auto tag) {
        using T = decltype(tag);
        std::vector<AdafactorTensor<T>> ts(n);
        for (std::size_t i = 0; i < n; ++i)
            ts[i] = {p.data<T>(i), g.data<T>(i), static_cast<T*>(raw[i].r),
                     static_cast<T*>(raw[i].c), static_cast<T*>(raw[i].v), p.count(i),
                     raw[i].batch, raw[i].rows, raw[i].cols};
        run_adafactor<T>(ts, c);
    };
    if (gate.dtype() == DType::f32) build(float{});
    else build(double{});
}

MuonConfig muon_config(double lr, double weight_decay, double momentum, bool nesterov) {
    MuonConfig c;
    c.lr = lr;
    c.weight_decay = weight_decay;
    c.momentum = momentum;
    c.nesterov = nesterov;
    raise_invalid(validate(c));
    return c;
}

void muon_momentum(py::handle outs, py::handle grads, py::handle momentum_buffers,
                   double momentum, bool nesterov) {
    const MuonConfig c = muon_config(0.0, 0.0, momentum, nesterov);
    Gate gate;
    ArrayList o = gate.first(outs, "outs", true);
    ArrayList g = gate.like(grads, "grads", false);
    ArrayList b = gate.like(momentum_buffers, "momentum_buffers", true);
    gate.check_no_overlap();
    auto run = [&](auto tag) {
        using T = decltype(tag);
        std::vector<MuonTensor<T>> ts(o.size());
        for (std::size_t i = 0; i < ts.size(); ++i)
            ts[i] = {o.data<T>(i), g.data<T>(i), b.data<T>(i), o.count(i)};
        const int nt = dispatch::num_threads();
        const auto kernel = dispatch::active().ops<T>().muon_momentum;
        py::gil_scoped_release nogil;
        kernel(ts.data(), ts.size(), c, nt);
    };
    if (gate.dtype() == DType::f32) run(float{});
    else run(double{});
}

void muon_update(py::handle params, py::handle updates, const std::vector<double>& alphas,
                 double lr, double weight_decay) {
    const MuonConfig c = muon_config(lr, weight_decay, 0.0, false);
    Gate gate;
    ArrayList p = gate.first(params, "params", true);
    ArrayList u = gate.like(updates, "updates", false);
    if (alphas.size() != p.size())
        throw py::value_error("alphas has " + std::to_string(alphas.size()) +
                              " entries but params has " + std::to_string(p.size()));
    for (double a : alphas)
        if (!std::isfinite(a)) throw py::value_error("alphas must be finite numbers");
    gate.check_no_overlap();
    auto run = [&](auto tag) {
        using T = decltype(tag);
        std::vector<MuonUpdateTensor<T>> ts(p.size());
        for (std::size_t i = 0; i < ts.size(); ++i)
            ts[i] = {p.data<T>(i), u.data<T>(i), alphas[i], p.count(i)};
        const int nt = dispatch::num_threads();
        const auto kernel = dispatch::active().ops<T>().muon_update;
        py::gil_scoped_release nogil;
        kernel(ts.data(), ts.size(), c, nt);
    };
    if (gate.dtype() == DType::f32) run(float{});
    else run(double{});
}

void sparse_adam_step(py::handle param, py::handle exp_avg, py::handle exp_avg_sq,
                      py::handle rows, py::handle values, std::int64_t step, double lr,
                      double beta1, double beta2, double eps, bool maximize) {
    SparseAdamConfig c;
    c.step = step;
    c.lr = lr;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.eps = eps;
    c.maximize = maximize;
    raise_invalid(validate(c));
    Gate gate;
    ArrayList p = gate.first(param, "param", true);
    ArrayList m = gate.like(exp_avg, "exp_avg", true);
    ArrayList v = gate.like(exp_avg_sq, "exp_avg_sq", true);
    if (!p.single) throw py::type_error("param must be one array, not a list");
    py::array r = gate.indices(rows, "rows");
    py::array val = gate.single(values, "values", false);
    const std::vector<py::ssize_t> shape = dims_of(p, 0);
    if (shape.empty()) throw py::value_error("param must have at least one dimension");
    const std::size_t nrows_total = std::size_t(shape[0]);
    const std::size_t cols = nrows_total ? p.count(0) / nrows_total : 0;
    if (r.ndim() != 1) throw py::value_error("rows must be 1-D");
    const std::size_t k = std::size_t(r.size());
    std::vector<py::ssize_t> want{py::ssize_t(k)};
    want.insert(want.end(), shape.begin() + 1, shape.end());
    std::vector<py::ssize_t> got(val.shape(), val.shape() + val.ndim());
    if (got != want)
        throw py::value_error("values has shape " + shape_text(got) + " but must have shape " +
                              shape_text(want) + " (one row of param per entry of rows)");
    const auto* idx = static_cast<const std::int64_t*>(r.data());
    std::vector<char> seen(nrows_total, 0);
    for (std::size_t j = 0; j < k; ++j) {
        if (idx[j] < 0 || std::size_t(idx[j]) >= nrows_total)
            throw py::value_error("rows[" + std::to_string(j) + "] = " + std::to_string(idx[j]) +
                                  " is out of range for param with " +
                                  std::to_string(nrows_total) + " rows");
        if (seen[std::size_t(idx[j])]++)
            throw py::value_error("rows must be unique (coalesce the gradient first); row " +
                                  std::to_string(idx[j]) + " repeats");
    }
    gate.check_no_overlap();
    auto run = [&](auto tag) {
        using T = decltype(tag);
        const int nt = dispatch::num_threads();
        const auto kernel = dispatch::active().ops<T>().sparse_adam;
        T* pp = p.data<T>(0);
        T* mp = m.data<T>(0);
        T* vp = v.data<T>(0);
        const T* vals = static_cast<const T*>(val.data());
        py::gil_scoped_release nogil;
        kernel(pp, mp, vp, idx, vals, k, cols, c, nt);
    };
    if (gate.dtype() == DType::f32) run(float{});
    else run(double{});
}

}  // namespace

void bind_factored(py::module_& m) {
    const AdafactorConfig a{};
    m.def("adafactor_step", &adafactor_step, "params"_a, "grads"_a, "row_vars"_a, "col_vars"_a,
          "variances"_a, py::kw_only(), "step"_a, "lr"_a = a.lr, "beta2_decay"_a = a.beta2_decay,
          "eps1"_a = a.eps1, "eps2"_a = a.eps2, "d"_a = a.d, "weight_decay"_a = a.weight_decay,
          "maximize"_a = a.maximize,
          "One Adafactor step in place, with torch.optim.Adafactor's math, on a list.\n\n"
          "A parameter with 2 or more dimensions is factored over its last two: row_vars[i]\n"
          "has its shape with the last dimension 1, col_vars[i] with the second-to-last 1,\n"
          "variances[i] is None. A 1-D or 0-d parameter has variances[i] (its shape) and None\n"
          "in the other two. step is the step being taken (1 first); eps1=-1 is torch's None\n"
          "(the dtype's machine epsilon). Arrays are checked first; nothing is touched on error.");
    const MuonConfig mc{};
    m.def("muon_momentum", &muon_momentum, "outs"_a, "grads"_a, "momentum_buffers"_a,
          py::kw_only(), "momentum"_a = mc.momentum, "nesterov"_a = mc.nesterov,
          "Muon's momentum in place: buf = lerp(buf, g, 1 - momentum); outs = lerp(g, buf,\n"
          "momentum) with nesterov, else buf (torch.optim.Muon).");
    m.def("muon_update", &muon_update, "params"_a, "updates"_a, "alphas"_a, py::kw_only(),
          "lr"_a = mc.lr, "weight_decay"_a = mc.weight_decay,
          "Muon's update in place: p = p * (1 - lr * weight_decay) + alphas[i] * updates[i].");
    const SparseAdamConfig s{};
    m.def("sparse_adam_step", &sparse_adam_step, "param"_a, "exp_avg"_a, "exp_avg_sq"_a,
          "rows"_a, "values"_a, py::kw_only(), "step"_a, "lr"_a = s.lr, "beta1"_a = s.beta1,
          "beta2"_a = s.beta2, "eps"_a = s.eps, "maximize"_a = s.maximize,
          "One SparseAdam step in place (torch.optim.SparseAdam) on the rows of param named by\n"
          "rows (int64, unique, in range); values[k] is the gradient of row rows[k]. Only those\n"
          "rows of param, exp_avg and exp_avg_sq change.");
}

}  // namespace fastoptim::bind
