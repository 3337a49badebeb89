// Python bindings of the loss and penalty kernels: point_loss, softmax_cross_entropy,
// penalty. Each validates every array and setting first (no buffer is touched on error),
// then releases the GIL for the kernel (safe: the kernel only sees raw pointers into arrays
// that this frame keeps alive).
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/arrays.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

bool parse_reduction(const std::string& r) {
    if (r == "mean") return true;
    if (r == "sum") return false;
    throw py::value_error("reduction must be 'mean' or 'sum', got '" + r + "'");
}

PointLoss parse_point_loss(const std::string& k) {
    if (k == "mse") return PointLoss::mse;
    if (k == "mae") return PointLoss::mae;
    if (k == "huber") return PointLoss::huber;
    if (k == "bce_logits") return PointLoss::bce_logits;
    throw py::value_error("kind must be 'mse', 'mae', 'huber' or 'bce_logits', got '" + k + "'");
}

template <class T>
double run_point_loss(const ArrayList& in, const ArrayList& tg, const ArrayList* g,
                      const PointLossConfig& c) {
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().point_loss;
    T* gp = g ? g->data<T>(0) : nullptr;
    const T* ip = in.data<T>(0);
    const T* tp = tg.data<T>(0);
    const std::size_t n = in.count(0);
    py::gil_scoped_release nogil;
    return kernel(gp, ip, tp, n, c, nt);
}

double point_loss(const std::string& kind, py::handle input, py::handle target, py::handle grad,
                  const std::string& reduction, double delta) {
    PointLossConfig c;
    c.kind = parse_point_loss(kind);
    const bool mean = parse_reduction(reduction);
    if (c.kind == PointLoss::huber && !(delta > 0.0 && delta < 1e300))
        throw py::value_error("delta must be a finite number > 0, got " +
                              std::string(py::str(py::float_(delta))));
    c.delta = delta;
    Gate gate;
    ArrayList in = gate.first(input, "input", false);
    if (!in.single) throw py::type_error("input must be a numpy.ndarray");
    ArrayList tg = gate.like(target, "target", false);
    ArrayList g;
    if (!grad.is_none()) g = gate.like(grad, "out", true);
    gate.check_no_overlap();
    const std::size_t n = in.count(0);
    c.scale = mean ? 1.0 / static_cast<double>(n) : 1.0;  // mean of nothing: NaN, as torch
    const ArrayList* gp = grad.is_none() ? nullptr : &g;
    return gate.dtype() == DType::f32 ? run_point_loss<float>(in, tg, gp, c)
                                      : run_point_loss<double>(in, tg, gp, c);
}

template <class T>
double run_xent(const py::array& z, const py::array* labels, const py::array* probs,
                const py::array* w, const py::array* g, std::size_t rows, std::size_t C,
                const XentConfig& c) {
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().softmax_xent;
    auto ptr = [](const py::array* a) { return a ? static_cast<T*>(const_cast<void*>(a->data())) : nullptr; };
    const T* zp = static_cast<const T*>(z.data());
    const std::int64_t* lp = labels ? static_cast<const std::int64_t*>(labels->data()) : nullptr;
    const T* tp = ptr(probs);
    const T* wp = ptr(w);
    T* gp = ptr(g);
    py::gil_scoped_release nogil;
    return kernel(gp, zp, lp, tp, wp, rows, C, c, nt);
}

double softmax_cross_entropy(py::handle logits, py::handle target, py::handle grad,
                             py::handle weight, double label_smoothing,
                             const std::string& reduction) {
    XentConfig c;
    c.mean = parse_reduction(reduction);
    if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
        throw py::value_error("label_smoothing must be in [0, 1], got " +
                              std::string(py::str(py::float_(label_smoothing))));
    c.label_smoothing = label_smoothing;
    Gate gate;
    py::array z = gate.single(logits, "logits", false);
    if (z.ndim() != 2)
        throw py::value_error("logits must be 2-D (batch, classes), got shape " + shape_str(z));
    const std::size_t rows = static_cast<std::size_t>(z.shape(0));
    const std::size_t C = static_cast<std::size_t>(z.shape(1));
    if (C == 0) throw py::value_error("logits must have at least one class column");
    py::array labels, probs, w, g;
    const bool is_labels = py::isinstance<py::array>(target) &&
                           py::reinterpret_borrow<py::array>(target).dtype().kind() != 'f';
    if (is_labels) {
        labels = gate.indices(target, "target");
        if (labels.ndim() != 1 || static_cast<std::size_t>(labels.shape(0)) != rows)
            throw py::value_error("target (class indices) must have shape (" +
                                  std::to_string(rows) + ",) to match logits " + shape_str(z) +
                                  ", got " + shape_str(labels));
    } else {
        probs = gate.single(target, "target", false);
        if (probs.ndim() != 2 || probs.shape(0) != z.shape(0) || probs.shape(1) != z.shape(1))
            throw py::value_error("target (probabilities) must have the shape of logits " +
                                  shape_str(z) + ", got " + shape_str(probs));
    }
    if (!weight.is_none()) {
        w = gate.single(weight, "weight", false);
        if (w.ndim() != 1 || static_cast<std::size_t>(w.shape(0)) != C)
            throw py::value_error("weight must have shape (" + std::to_string(C) +
                                  ",), one per class, got " + shape_str(w));
    }
    if (!grad.is_none()) {
        g = gate.single(grad, "out", true);
        if (g.ndim() != 2 || g.shape(0) != z.shape(0) || g.shape(1) != z.shape(1))
            throw py::value_error("out must have the shape of logits " + shape_str(z) +
                                  ", got " + shape_str(g));
    }
    gate.check_no_overlap();
    if (is_labels) {
        const std::int64_t* lp = static_cast<const std::int64_t*>(labels.data());
        const std::int64_t hi = static_cast<std::int64_t>(C);
        for (std::size_t i = 0; i < rows; ++i)
            if (lp[i] < 0 || lp[i] >= hi)
                throw py::value_error("target[" + std::to_string(i) + "] = " +
                                      std::to_string(lp[i]) + " is not a class index in [0, " +
                                      std::to_string(C) + ")");
    }
    const py::array* lab = is_labels ? &labels : nullptr;
    const py::array* pr = is_labels ? nullptr : &probs;
    const py::array* wp = weight.is_none() ? nullptr : &w;
    const py::array* gp = grad.is_none() ? nullptr : &g;
    return gate.dtype() == DType::f32 ? run_xent<float>(z, lab, pr, wp, gp, rows, C, c)
                                      : run_xent<double>(z, lab, pr, wp, gp, rows, C, c);
}

template <class T>
double run_penalty(const ArrayList& p, const ArrayList* g, double l1, double l2) {
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().penalty;
    struct Job {
        T* g;
        const T* p;
        std::size_t n;
    };
    std::vector<Job> jobs(p.size());
    for (std::size_t i = 0; i < p.size(); ++i)
        jobs[i] = Job{g ? g->data<T>(i) : nullptr, p.data<T>(i), p.count(i)};
    double s = 0.0;
    py::gil_scoped_release nogil;
    for (const Job& j : jobs) s += kernel(j.g, j.p, j.n, l1, l2, nt);  // in list order
    return s;
}

double penalty(py::handle params, py::handle grads, double l1, double l2) {
    check_hyper(l1, "l1");
    check_hyper(l2, "l2");
    Gate gate;
    ArrayList p = gate.first(params, "params", false);
    ArrayList g;
    if (!grads.is_none()) g = gate.like(grads, "grads", true);
    gate.check_no_overlap();
    if (p.size() == 0) return 0.0;
    const ArrayList* gp = grads.is_none() ? nullptr : &g;
    return gate.dtype() == DType::f32 ? run_penalty<float>(p, gp, l1, l2)
                                      : run_penalty<double>(p, gp, l1, l2);
}

}  // namespace

void bind_losses(py::module_& m) {
    using namespace pybind11::literals;
    m.def("point_loss", &point_loss, "kind"_a, "input"_a, "target"_a, "out"_a = py::none(),
          py::kw_only(), "reduction"_a = "mean", "delta"_a = 1.0,
          R"doc(Elementwise loss ('mse', 'mae', 'huber', 'bce_logits') of input against target
(same shape, same float dtype) and, when out is given, its gradient written into out in the
same pass. Returns the loss reduced by 'mean' or 'sum'. See fastoptim.losses.)doc");
    m.def("softmax_cross_entropy", &softmax_cross_entropy, "logits"_a, "target"_a,
          "out"_a = py::none(), py::kw_only(), "weight"_a = py::none(),
          "label_smoothing"_a = 0.0, "reduction"_a = "mean",
          R"doc(Softmax cross-entropy of logits (N, C) against int64 class indices (N,) or
probabilities (N, C), with torch's class-weight and label-smoothing semantics; out (N, C), if
given, receives the gradient. See fastoptim.losses.)doc");
    m.def("penalty", &penalty, "params"_a, "grads"_a = py::none(), py::kw_only(), "l1"_a = 0.0,
          "l2"_a = 0.0,
          R"doc(Returns l1 * sum|p| + l2 / 2 * sum p^2 over params (an array or a list) and, when
grads is given, adds l1 * sign(p) + l2 * p to it in the same pass (subgradient 0 at p = 0).)doc");
}

}  // namespace fastoptim::bind
