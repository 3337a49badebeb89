// Python bindings of the layer kernels: bias_act_forward, act_backward, dropout_forward.
// Arrays are (..., C) C-contiguous matrices seen as rows of C columns. Each function checks
// everything first (no buffer is touched on error), then releases the GIL for the kernel
// (safe: the kernel only sees raw pointers into arrays that this frame keeps alive).
#include <cmath>
#include <cstdint>
#include <string>

#include "bindings/arrays.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

Act parse_act(py::handle h) {
    if (h.is_none()) return Act::none;
    if (!py::isinstance<py::str>(h)) throw py::type_error("activation must be a str or None");
    const std::string a = py::str(h);
    if (a == "none" || a == "identity" || a == "linear") return Act::none;
    if (a == "relu") return Act::relu;
    if (a == "leaky_relu") return Act::leaky_relu;
    if (a == "sigmoid") return Act::sigmoid;
    if (a == "tanh") return Act::tanh;
    if (a == "gelu_tanh") return Act::gelu_tanh;
    if (a == "gelu") return Act::gelu;
    if (a == "softmax") return Act::softmax;
    throw py::value_error("activation must be one of None, 'relu', 'leaky_relu', 'sigmoid', "
                          "'tanh', 'gelu', 'gelu_tanh', 'softmax'; got '" + a + "'");
}

ActConfig make_act(py::handle activation, double alpha) {
    ActConfig c;
    c.act = parse_act(activation);
    if (!std::isfinite(alpha)) throw py::value_error("alpha must be finite");
    c.alpha = alpha;
    return c;
}

// Rows and columns of a (..., C) array; ValueError for a 0-d array.
std::pair<std::size_t, std::size_t> rows_cols(const py::array& a, const char* name) {
    if (a.ndim() < 1) throw py::value_error(std::string(name) + " must have at least 1 dimension");
    const std::size_t C = static_cast<std::size_t>(a.shape(a.ndim() - 1));
    return {C ? static_cast<std::size_t>(a.size()) / C : 0, C};
}

void expect_same(const py::array& a, const char* an, const py::array& b, const char* bn) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t d = 0; same && d < a.ndim(); ++d) same = a.shape(d) == b.shape(d);
    if (!same)
        throw py::value_error(std::string(an) + " has shape " + shape_str(a) + " but " + bn +
                              " has shape " + shape_str(b));
}

void expect_vector(const py::array& v, const char* name, std::size_t C, const char* of) {
    if (v.ndim() != 1 || static_cast<std::size_t>(v.shape(0)) != C)
        throw py::value_error(std::string(name) + " must have shape (" + std::to_string(C) +
                              ",), the last dimension of " + of + ", got " + shape_str(v));
}

template <class T>
T* ptr(const py::array* a) {
    return a ? static_cast<T*>(const_cast<void*>(a->data())) : nullptr;
}

template <class T>
void run_forward(const py::array& z, const py::array* y, const py::array* b, std::size_t rows,
                 std::size_t C, const ActConfig& c) {
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().bias_act_forward;
    T* zp = ptr<T>(&z);
    T* yp = y ? ptr<T>(y) : zp;
    const T* bp = ptr<T>(b);
    py::gil_scoped_release nogil;
    kernel(yp, zp, bp, rows, C, c, nt);
}

void bias_act_forward(py::handle z_obj, py::handle y_obj, py::handle bias_obj,
                      py::handle activation, double alpha) {
    const ActConfig c = make_act(activation, alpha);
    Gate gate;
    // z is written when the bias is added or the activation replaces it (y=None)
    py::array z = gate.single(z_obj, "z", !bias_obj.is_none() || y_obj.is_none());
    const auto [rows, C] = rows_cols(z, "z");
    py::array y, b;
    if (!y_obj.is_none()) {
        y = gate.single(y_obj, "y", true);
        expect_same(y, "y", z, "z");
    }
    if (!bias_obj.is_none()) {
        b = gate.single(bias_obj, "bias", false);
        expect_vector(b, "bias", C, "z");
    }
    gate.check_no_overlap();
    const py::array* yp = y_obj.is_none() ? nullptr : &y;
    const py::array* bp = bias_obj.is_none() ? nullptr : &b;
    if (gate.dtype() == DType::f32) run_forward<float>(z, yp, bp, rows, C, c);
    else run_forward<double>(z, yp, bp, rows, C, c);
}

template <class T>
void run_backward(const py::array* dz, const py::array& dy, const py::array* z,
                  const py::array* y, const py::array* db, std::size_t rows, std::size_t C,
                  const ActConfig& c, bool acc) {
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().act_backward;
    T* dzp = ptr<T>(dz);
    const T* dyp = ptr<T>(&dy);
    const T* zp = ptr<T>(z);
    const T* yp = ptr<T>(y);
    T* dbp = ptr<T>(db);
    py::gil_scoped_release nogil;
    kernel(dzp, dyp, zp, yp, dbp, rows, C, c, acc, nt);
}

void act_backward(py::handle dy_obj, py::handle dz_obj, py::handle z_obj, py::handle y_obj,
                  py::handle dbias_obj, py::handle activation, double alpha,
                  bool accumulate_bias) {
    const ActConfig c = make_act(activation, alpha);
    Gate gate;
    py::array dy = gate.single(dy_obj, "dy", false);
    const auto [rows, C] = rows_cols(dy, "dy");
    const bool from_y = c.act == Act::sigmoid || c.act == Act::tanh || c.act == Act::softmax;
    const bool from_z = c.act != Act::none && !from_y;
    py::array dz, z, y, db;
    if (c.act != Act::none) {
        if (dz_obj.is_none()) throw py::value_error("dz is required for this activation");
        dz = gate.single(dz_obj, "dz", true);
        expect_same(dz, "dz", dy, "dy");
    }
    if (from_z) {
        if (z_obj.is_none()) throw py::value_error("z (the pre-activation) is required for this activation");
        z = gate.single(z_obj, "z", false);
        expect_same(z, "z", dy, "dy");
    }
    if (from_y) {
        if (y_obj.is_none()) throw py::value_error("y (the forward output) is required for this activation");
        y = gate.single(y_obj, "y", false);
        expect_same(y, "y", dy, "dy");
    }
    if (!dbias_obj.is_none()) {
        db = gate.single(dbias_obj, "dbias", true);
        expect_vector(db, "dbias", C, "dy");
    }
    gate.check_no_overlap();
    const py::array* dzp = c.act != Act::none ? &dz : nullptr;
    const py::array* zp = from_z ? &z : nullptr;
    const py::array* yp = from_y ? &y : nullptr;
    const py::array* dbp = dbias_obj.is_none() ? nullptr : &db;
    if (gate.dtype() == DType::f32) run_backward<float>(dzp, dy, zp, yp, dbp, rows, C, c, accumulate_bias);
    else run_backward<double>(dzp, dy, zp, yp, dbp, rows, C, c, accumulate_bias);
}

template <class T>
void run_dropout(const py::array& x, const py::array& y, const py::array& mask, double p,
                 std::uint64_t seed, std::uint64_t stream, std::uint64_t offset) {
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().dropout;
    const T* xp = ptr<T>(&x);
    T* yp = ptr<T>(&y);
    T* mp = ptr<T>(&mask);
    const std::size_t n = static_cast<std::size_t>(x.size());
    py::gil_scoped_release nogil;
    kernel(yp, mp, xp, n, p, seed, stream, offset, nt);
}

void dropout_forward(py::handle x_obj, py::handle y_obj, py::handle mask_obj, double p,
                     std::uint64_t seed, std::uint64_t stream, std::uint64_t offset) {
    if (!(p >= 0.0 && p <= 1.0))
        throw py::value_error("p must be in [0, 1], got " + std::string(py::str(py::float_(p))));
    Gate gate;
    py::array x = gate.single(x_obj, "x", false);
    py::array y = gate.single(y_obj, "y", true);
    py::array mask = gate.single(mask_obj, "mask", true);
    expect_same(y, "y", x, "x");
    expect_same(mask, "mask", x, "x");
    gate.check_no_overlap();
    if (gate.dtype() == DType::f32) run_dropout<float>(x, y, mask, p, seed, stream, offset);
    else run_dropout<double>(x, y, mask, p, seed, stream, offset);
}

}  // namespace

void bind_nn(py::module_& m) {
    using namespace pybind11::literals;
    m.def("bias_act_forward", &bias_act_forward, "z"_a, "y"_a = py::none(),
          "bias"_a = py::none(), py::kw_only(), "activation"_a = py::none(), "alpha"_a = 0.01,
          R"doc(z += bias (per last-axis column), then y = activation(z), in one pass. With
y=None the activation overwrites z. See fastoptim.nn.)doc");
    m.def("act_backward", &act_backward, "dy"_a, "dz"_a = py::none(), "z"_a = py::none(),
          "y"_a = py::none(), "dbias"_a = py::none(), py::kw_only(),
          "activation"_a = py::none(), "alpha"_a = 0.01, "accumulate_bias"_a = false,
          R"doc(dz = dy * activation'(z) and dbias = column sums of dz (added to dbias when
accumulate_bias, else overwritten), in one pass. relu/leaky_relu/gelu/gelu_tanh read z (the
pre-activation); sigmoid/tanh/softmax read y (the output). See fastoptim.nn.)doc");
    m.def("dropout_forward", &dropout_forward, "x"_a, "y"_a, "mask"_a, py::kw_only(), "p"_a,
          "seed"_a, "stream"_a = 0, "offset"_a = 0,
          R"doc(Inverted dropout: mask = 1/(1-p) with probability 1-p else 0, y = x * mask.
The draw for element i is a hash of (seed, stream, offset + i): identical for any thread
count; offset places x inside a larger batch (a data-parallel rank's share).)doc");
}

}  // namespace fastoptim::bind
