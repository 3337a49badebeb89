// Reduced-precision formats: Adam on bf16/fp16/8-bit buffers, and format conversions.
//
// This file has its own small gate (FormatGate) for the storage dtypes of the formats; it
// follows the rules of arrays.hpp (no conversion or copy, every check before any write,
// errors name the argument) and is kept apart from the float32/float64 gate on purpose.
//
// Dtypes (numpy has no bfloat16, so bf16 buffers are uint16 arrays of the bit patterns):
//   float32  numpy float32   / torch.float32
//   bf16     numpy uint16    / torch.bfloat16
//   f16      numpy float16   / torch.float16
//   q8 codes numpy uint8     / torch.uint8 (with a float32 absmax per kQ8Block elements)
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/arrays.hpp"
#include "dispatch/formats_table.hpp"
#include "dispatch/table.hpp"
#include "fastoptim/config.hpp"
#include "fastoptim/formats/types.hpp"

namespace fastoptim::bind {

namespace {

namespace py = pybind11;

// The storage kind of one buffer, before its role gives it a format.
enum class Kind { f32, bf16, f16, u8 };

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::f32: return "float32";
        case Kind::bf16: return "bfloat16 (numpy uint16 / torch.bfloat16)";
        case Kind::f16: return "float16";
        default: return "uint8";
    }
}

struct Arr {
    py::object obj;  // keeps it alive while the GIL is released
    void* data = nullptr;
    std::size_t n = 0;
    std::size_t bytes = 0;
    std::vector<py::ssize_t> shape;
    Kind kind = Kind::f32;
};

std::string shape_of(const std::vector<py::ssize_t>& s) {
    std::string r = "(";
    for (std::size_t i = 0; i < s.size(); ++i)
        r += std::to_string(s[i]) + (s.size() == 1 || i + 1 < s.size() ? (s.size() == 1 ? "," : ", ") : "");
    return r + ")";
}

std::string tname(py::handle h) { return py::str(py::type::handle_of(h).attr("__name__")); }

// Collects the buffers of one call; every check runs before any kernel does.
class FormatGate {
public:
    Arr parse(py::handle obj, const std::string& name, bool writable) {
        Arr a;
        if (py::isinstance<py::array>(obj)) a = parse_array(obj, name, writable);
        else if (is_torch_tensor(obj)) a = parse_tensor(obj, name);
        else
            throw py::type_error(name + " must be a numpy.ndarray or a torch.Tensor, got " + tname(obj));
        if (a.bytes) {
            const char* p = static_cast<const char*>(a.data);
            ranges_.push_back({p, p + a.bytes, name});
        }
        return a;
    }

    void check_no_overlap() {
        std::sort(ranges_.begin(), ranges_.end(),
                  [](const Range& x, const Range& y) { return x.begin < y.begin; });
        for (std::size_t i = 1; i < ranges_.size(); ++i)
            if (ranges_[i].begin < ranges_[i - 1].end)
                throw py::value_error(ranges_[i - 1].name + " and " + ranges_[i].name +
                                      " share memory (the same buffer or overlapping views); "
                                      "every array of one call must be a separate buffer");
    }

private:
    struct Range {
        const char* begin;
        const char* end;
        std::string name;
    };
    std::vector<Range> ranges_;

    static bool is_torch_tensor(py::handle h) {
        PyObject* torch = PyDict_GetItemString(PyImport_GetModuleDict(), "torch");
        if (!torch || !PyObject_HasAttrString(torch, "Tensor")) return false;
        return py::isinstance(h, py::handle(torch).attr("Tensor"));
    }

    static Arr parse_array(py::handle obj, const std::string& name, bool writable) {
        py::array a = py::reinterpret_borrow<py::array>(obj);
        const py::dtype dt = a.dtype();
        const char k = dt.kind();
        const py::ssize_t size = dt.itemsize();
        Arr r;
        if (k == 'f' && size == 4) r.kind = Kind::f32;
        else if (k == 'u' && size == 2) r.kind = Kind::bf16;
        else if (k == 'f' && size == 2) r.kind = Kind::f16;
        else if (k == 'u' && size == 1) r.kind = Kind::u8;
        else
            throw py::type_error(name + " must be a float32, uint16 (bfloat16 bits), float16 or "
                                 "uint8 array, got dtype " + std::string(py::str(dt)));
        if (dt.byteorder() == '>')
            throw py::type_error(name + " must be in native byte order, got dtype " + std::string(py::str(dt)));
        if (!(a.flags() & py::array::c_style))
            throw py::value_error(name + " must be C-contiguous (got a strided, Fortran-order or "
                                         "negative-stride view); arrays are updated in place and never copied");
        if (!py::detail::check_flags(a.ptr(), py::detail::npy_api::NPY_ARRAY_ALIGNED_))
            throw py::value_error(name + " is not aligned to its dtype; pass an aligned array");
        if (writable && !a.writeable())
            throw py::value_error(name + " is read-only; it is updated in place and must be writeable");
        r.obj = py::reinterpret_borrow<py::object>(obj);
        r.data = const_cast<void*>(a.data());
        r.n = static_cast<std::size_t>(a.size());
        r.bytes = static_cast<std::size_t>(a.nbytes());
        for (py::ssize_t d = 0; d < a.ndim(); ++d) r.shape.push_back(a.shape(d));
        return r;
    }

    static Arr parse_tensor(py::handle t, const std::string& name) {
        py::module_ torch = py::module_::import("torch");
        if (!t.attr("layout").is(torch.attr("strided")))
            throw py::type_error(name + " is a " + std::string(py::str(t.attr("layout"))) +
                                 " tensor; fastoptim updates dense (torch.strided) tensors only");
        if (!py::bool_(t.attr("is_cpu")))
            throw py::value_error(name + " is on device " + std::string(py::str(t.attr("device"))) +
                                  "; fastoptim updates CPU tensors only");
        py::object dt = t.attr("dtype");
        Arr r;
        std::size_t item = 4;
        if (dt.is(torch.attr("float32"))) r.kind = Kind::f32;
        else if (dt.is(torch.attr("bfloat16"))) { r.kind = Kind::bf16; item = 2; }
        else if (dt.is(torch.attr("float16"))) { r.kind = Kind::f16; item = 2; }
        else if (dt.is(torch.attr("uint8"))) { r.kind = Kind::u8; item = 1; }
        else
            throw py::type_error(name + " must be a float32, bfloat16, float16 or uint8 tensor, got " +
                                 std::string(py::str(dt)));
        if (!py::bool_(t.attr("is_contiguous")()))
            throw py::value_error(name + " must be a contiguous tensor; tensors are updated in place and never copied");
        r.obj = py::reinterpret_borrow<py::object>(t);
        r.n = 1;
        for (py::handle d : py::tuple(t.attr("shape"))) {
            r.shape.push_back(d.cast<py::ssize_t>());
            r.n *= d.cast<std::size_t>();
        }
        r.data = PyLong_AsVoidPtr(t.attr("data_ptr")().ptr());
        r.bytes = r.n * item;
        return r;
    }
};

std::vector<py::handle> as_list(py::handle obj, const char* name) {
    if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
        throw py::type_error(std::string(name) + " must be a list of arrays or tensors, got " + tname(obj));
    std::vector<py::handle> out;
    for (py::handle h : py::reinterpret_borrow<py::sequence>(obj)) out.push_back(h);
    return out;
}

// A per-tensor list that may be None (all absent) or hold None entries.
std::vector<py::handle> optional_list(py::handle obj, const char* name, std::size_t count) {
    if (obj.is_none()) return std::vector<py::handle>(count, py::none());
    std::vector<py::handle> l = as_list(obj, name);
    if (l.size() != count)
        throw py::value_error(std::string(name) + " has " + std::to_string(l.size()) +
                              " entries but params has " + std::to_string(count));
    return l;
}

std::string item(const char* base, std::size_t i) { return std::string(base) + "[" + std::to_string(i) + "]"; }

void same_shape(const Arr& a, const std::string& an, const Arr& ref, const std::string& rn) {
    if (a.shape != ref.shape)
        throw py::value_error(an + " has shape " + shape_of(a.shape) + " but " + rn + " has shape " +
                              shape_of(ref.shape));
}

Rounding parse_rounding(const std::string& s, const char* name) {
    if (s == "nearest") return Rounding::nearest;
    if (s == "stochastic") return Rounding::stochastic;
    throw py::value_error(std::string(name) + " must be 'nearest' or 'stochastic', got '" + s + "'");
}

Format state_format_of(Kind k) {
    switch (k) {
        case Kind::f32: return Format::f32;
        case Kind::bf16: return Format::bf16;
        case Kind::u8: return Format::q8;
        default: return Format::f16;
    }
}

// The absmax array of a q8 buffer: float32 [q8_blocks(n)], writable.
float* absmax_of(FormatGate& gate, py::handle obj, const std::string& name, std::size_t n,
                 bool writable) {
    if (obj.is_none())
        throw py::value_error(name + " is required: its buffer holds 8-bit codes (uint8), which "
                                     "need one float32 absmax per 256 elements");
    Arr a = gate.parse(obj, name, writable);
    const std::size_t blocks = q8_blocks(n);
    if (a.kind != Kind::f32)
        throw py::type_error(name + " must be float32, got " + kind_name(a.kind));
    if (a.shape.size() != 1 || a.n != blocks)
        throw py::value_error(name + " must have shape (" + std::to_string(blocks) + ",) (one per " +
                              std::to_string(kQ8Block) + " elements of " + std::to_string(n) +
                              "), got " + shape_of(a.shape));
    return static_cast<float*>(a.data);
}

// One Adam/AdamW step on buffers of any supported formats (see the docstring below).
void adam_format_step(py::handle params, py::handle grads, py::handle exp_avgs,
                      py::handle exp_avg_sqs, py::handle max_exp_avg_sqs,
                      py::handle absmax_exp_avgs, py::handle absmax_exp_avg_sqs,
                      py::handle absmax_max_exp_avg_sqs, py::handle param_copies,
                      std::int64_t step, double lr, double beta1, double beta2, double eps,
                      double weight_decay, bool decoupled_weight_decay, bool amsgrad,
                      bool maximize, std::uint64_t seed, const std::string& param_rounding,
                      const std::string& state_rounding) {
    AdamConfig c;
    c.lr = lr;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.eps = eps;
    c.weight_decay = weight_decay;
    c.step = step;
    c.decoupled_weight_decay = decoupled_weight_decay;
    c.amsgrad = amsgrad;
    c.maximize = maximize;
    const std::string err = validate(c);
    if (!err.empty()) throw py::value_error(err);
    const Rounding pr = parse_rounding(param_rounding, "param_rounding");
    const Rounding sr = parse_rounding(state_rounding, "state_rounding");

    const std::vector<py::handle> P = as_list(params, "params");
    const std::size_t count = P.size();
    auto list_like = [count](py::handle obj, const char* name) {
        std::vector<py::handle> l = as_list(obj, name);
        if (l.size() != count)
            throw py::value_error(std::string(name) + " has " + std::to_string(l.size()) +
                                  " entries but params has " + std::to_string(count));
        return l;
    };
    const std::vector<py::handle> G = list_like(grads, "grads");
    const std::vector<py::handle> M = list_like(exp_avgs, "exp_avgs");
    const std::vector<py::handle> V = list_like(exp_avg_sqs, "exp_avg_sqs");
    if (amsgrad && max_exp_avg_sqs.is_none())
        throw py::value_error("max_exp_avg_sqs is required when amsgrad=True");
    const std::vector<py::handle> VM = optional_list(max_exp_avg_sqs, "max_exp_avg_sqs", count);
    const std::vector<py::handle> AM = optional_list(absmax_exp_avgs, "absmax_exp_avgs", count);
    const std::vector<py::handle> AV = optional_list(absmax_exp_avg_sqs, "absmax_exp_avg_sqs", count);
    const std::vector<py::handle> AVM =
        optional_list(absmax_max_exp_avg_sqs, "absmax_max_exp_avg_sqs", count);
    const std::vector<py::handle> C = optional_list(param_copies, "param_copies", count);

    FormatGate gate;
    std::vector<Arr> keep;
    keep.reserve(5 * count);
    std::vector<FormatAdamTensor> ts(count);
    for (std::size_t i = 0; i < count; ++i) {
        FormatAdamTensor& t = ts[i];
        const std::string pn = item("params", i);
        Arr p = gate.parse(P[i], pn, true);
        if (p.kind == Kind::f16)
            throw py::type_error(pn + " is float16: float16 parameters need a float32 master; pass "
                                      "the float32 master in params and the float16 tensor in "
                                      "param_copies (written in the same pass)");
        if (p.kind == Kind::u8) throw py::type_error(pn + " must be float32 or bfloat16, got uint8");
        Arr g = gate.parse(G[i], item("grads", i), false);
        if (g.kind == Kind::u8) throw py::type_error(item("grads", i) + " must be float32, bfloat16 or float16, got uint8");
        same_shape(g, item("grads", i), p, pn);
        Arr m = gate.parse(M[i], item("exp_avgs", i), true);
        Arr v = gate.parse(V[i], item("exp_avg_sqs", i), true);
        same_shape(m, item("exp_avgs", i), p, pn);
        same_shape(v, item("exp_avg_sqs", i), p, pn);
        if (m.kind == Kind::f16)
            throw py::type_error(item("exp_avgs", i) + " is float16; state is float32, bfloat16 or uint8 codes");
        if (v.kind != m.kind)
            throw py::type_error(item("exp_avg_sqs", i) + " is " + kind_name(v.kind) + " but " +
                                 item("exp_avgs", i) + " is " + kind_name(m.kind) +
                                 "; the state buffers of one tensor share one format");
        t.state_format = state_format_of(m.kind);
        t.max_exp_avg_sq = nullptr;
        t.absmax_max_exp_avg_sq = nullptr;
        if (amsgrad) {
            if (VM[i].is_none()) throw py::value_error(item("max_exp_avg_sqs", i) + " is required when amsgrad=True");
            Arr vm = gate.parse(VM[i], item("max_exp_avg_sqs", i), true);
            same_shape(vm, item("max_exp_avg_sqs", i), p, pn);
            if (vm.kind != m.kind)
                throw py::type_error(item("max_exp_avg_sqs", i) + " is " + kind_name(vm.kind) + " but " +
                                     item("exp_avgs", i) + " is " + kind_name(m.kind) +
                                     "; the state buffers of one tensor share one format");
            t.max_exp_avg_sq = vm.data;
            keep.push_back(std::move(vm));
        }
        const bool q8 = t.state_format == Format::q8;
        t.absmax_exp_avg = t.absmax_exp_avg_sq = nullptr;
        if (q8) {
            t.absmax_exp_avg = absmax_of(gate, AM[i], item("absmax_exp_avgs", i), p.n, true);
            t.absmax_exp_avg_sq = absmax_of(gate, AV[i], item("absmax_exp_avg_sqs", i), p.n, true);
            if (amsgrad)
                t.absmax_max_exp_avg_sq = absmax_of(gate, AVM[i], item("absmax_max_exp_avg_sqs", i), p.n, true);
        } else {
            const char* names[] = {"absmax_exp_avgs", "absmax_exp_avg_sqs", "absmax_max_exp_avg_sqs"};
            const py::handle given[] = {AM[i], AV[i], AVM[i]};
            for (int k = 0; k < 3; ++k)
                if (!given[k].is_none())
                    throw py::value_error(item(names[k], i) + " was given but the state of params[" +
                                          std::to_string(i) + "] is " + kind_name(m.kind) +
                                          ", not 8-bit codes (uint8)");
        }
        t.param_copy = nullptr;
        t.copy_format = Format::f32;
        if (!C[i].is_none()) {
            Arr cp = gate.parse(C[i], item("param_copies", i), true);
            same_shape(cp, item("param_copies", i), p, pn);
            if (p.kind != Kind::f32)
                throw py::type_error(item("param_copies", i) + " is given but " + pn +
                                     " is not a float32 master");
            if (cp.kind != Kind::bf16 && cp.kind != Kind::f16)
                throw py::type_error(item("param_copies", i) + " must be bfloat16 or float16, got " +
                                     kind_name(cp.kind));
            t.param_copy = cp.data;
            t.copy_format = cp.kind == Kind::bf16 ? Format::bf16 : Format::f16;
            keep.push_back(std::move(cp));
        }
        t.param = p.data;
        t.param_format = p.kind == Kind::bf16 ? Format::bf16 : Format::f32;
        t.grad = g.data;
        t.grad_format = g.kind == Kind::f32 ? Format::f32 : (g.kind == Kind::bf16 ? Format::bf16 : Format::f16);
        t.exp_avg = m.data;
        t.exp_avg_sq = v.data;
        t.param_rounding = pr;
        t.state_rounding = sr;
        t.n = p.n;
        // Each tensor of the list draws its own streams: (seed, position in the list).
        t.seed = seed ^ (0x9E3779B97F4A7C15ull * (static_cast<std::uint64_t>(i) + 1));
        keep.push_back(std::move(p));
        keep.push_back(std::move(g));
        keep.push_back(std::move(m));
        keep.push_back(std::move(v));
    }
    gate.check_no_overlap();
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::format_active().adam;
    // Safe without the GIL: `keep` holds every buffer, and no Python object is touched.
    py::gil_scoped_release nogil;
    kernel(ts.data(), ts.size(), c, nt);
}

// The buffers of one SGD / RMSprop / Adagrad format step: per tensor a FormatStateTensor,
// every array checked (dtype, shape, absmax, overlap) before any kernel runs.
struct StateCall {
    FormatGate gate;
    std::vector<Arr> keep;
    std::vector<FormatStateTensor> ts;
};

// lists[j] / absmax[j]: state buffer j's list and its absmax list (either may be None);
// used[j]: whether the configuration uses buffer j (a used one is required).
void parse_state_call(StateCall& call, py::handle params, py::handle grads,
                      const std::vector<py::handle>& lists, const std::vector<py::handle>& absmax,
                      const std::vector<std::string>& names, const std::vector<bool>& used,
                      const std::vector<std::string>& why, py::handle param_copies,
                      std::uint64_t seed, const std::string& param_rounding,
                      const std::string& state_rounding) {
    const Rounding pr = parse_rounding(param_rounding, "param_rounding");
    const Rounding sr = parse_rounding(state_rounding, "state_rounding");
    const std::vector<py::handle> P = as_list(params, "params");
    const std::size_t count = P.size();
    const std::vector<py::handle> G = optional_list(grads, "grads", count);
    if (grads.is_none()) throw py::type_error("grads must be a list of arrays or tensors, got None");
    const std::size_t K = lists.size();
    std::vector<std::vector<py::handle>> S(K), A(K);
    for (std::size_t j = 0; j < K; ++j) {
        if (used[j] && lists[j].is_none())
            throw py::value_error(names[j] + " are required " + why[j]);
        S[j] = optional_list(used[j] ? lists[j] : py::none(), names[j].c_str(), count);
        A[j] = optional_list(used[j] ? absmax[j] : py::none(), ("absmax_" + names[j]).c_str(), count);
    }
    const std::vector<py::handle> C = optional_list(param_copies, "param_copies", count);
    call.keep.reserve((3 + 2 * K) * count);
    call.ts.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
        FormatStateTensor& t = call.ts[i];
        const std::string pn = item("params", i);
        Arr p = call.gate.parse(P[i], pn, true);
        if (p.kind == Kind::f16)
            throw py::type_error(pn + " is float16: float16 parameters need a float32 master; pass "
                                      "the float32 master in params and the float16 tensor in "
                                      "param_copies (written in the same pass)");
        if (p.kind == Kind::u8) throw py::type_error(pn + " must be float32 or bfloat16, got uint8");
        Arr g = call.gate.parse(G[i], item("grads", i), false);
        if (g.kind == Kind::u8) throw py::type_error(item("grads", i) + " must be float32, bfloat16 or float16, got uint8");
        same_shape(g, item("grads", i), p, pn);
        bool have_kind = false;
        Kind kind = Kind::f32;
        std::string first_name;
        for (std::size_t j = 0; j < kMaxStateBuffers; ++j) {
            t.state[j] = nullptr;
            t.absmax[j] = nullptr;
        }
        for (std::size_t j = 0; j < K; ++j) {
            if (!used[j]) continue;
            const std::string sn = item(names[j].c_str(), i);
            if (S[j][i].is_none()) throw py::value_error(sn + " is required " + why[j]);
            Arr b = call.gate.parse(S[j][i], sn, true);
            same_shape(b, sn, p, pn);
            if (b.kind == Kind::f16)
                throw py::type_error(sn + " is float16; state is float32, bfloat16 or uint8 codes");
            if (have_kind && b.kind != kind)
                throw py::type_error(sn + " is " + kind_name(b.kind) + " but " + first_name + " is " +
                                     kind_name(kind) + "; the state buffers of one tensor share one format");
            if (!have_kind) {
                have_kind = true;
                kind = b.kind;
                first_name = sn;
            }
            t.state[j] = b.data;
            call.keep.push_back(std::move(b));
        }
        t.state_format = state_format_of(kind);
        for (std::size_t j = 0; j < K; ++j) {
            if (!used[j]) continue;
            const std::string an = item(("absmax_" + names[j]).c_str(), i);
            if (t.state_format == Format::q8) t.absmax[j] = absmax_of(call.gate, A[j][i], an, p.n, true);
            else if (!A[j][i].is_none())
                throw py::value_error(an + " was given but the state of params[" + std::to_string(i) +
                                      "] is " + kind_name(kind) + ", not 8-bit codes (uint8)");
        }
        t.param_copy = nullptr;
        t.copy_format = Format::f32;
        if (!C[i].is_none()) {
            Arr cp = call.gate.parse(C[i], item("param_copies", i), true);
            same_shape(cp, item("param_copies", i), p, pn);
            if (p.kind != Kind::f32)
                throw py::type_error(item("param_copies", i) + " is given but " + pn + " is not a float32 master");
            if (cp.kind != Kind::bf16 && cp.kind != Kind::f16)
                throw py::type_error(item("param_copies", i) + " must be bfloat16 or float16, got " + kind_name(cp.kind));
            t.param_copy = cp.data;
            t.copy_format = cp.kind == Kind::bf16 ? Format::bf16 : Format::f16;
            call.keep.push_back(std::move(cp));
        }
        t.param = p.data;
        t.param_format = p.kind == Kind::bf16 ? Format::bf16 : Format::f32;
        t.grad = g.data;
        t.grad_format = g.kind == Kind::f32 ? Format::f32 : (g.kind == Kind::bf16 ? Format::bf16 : Format::f16);
        t.param_rounding = pr;
        t.state_rounding = sr;
        t.n = p.n;
        t.seed = seed ^ (0x9E3779B97F4A7C15ull * (static_cast<std::uint64_t>(i) + 1));
        call.keep.push_back(std::move(p));
        call.keep.push_back(std::move(g));
    }
    call.gate.check_no_overlap();
}

// Runs a FormatStateTensor kernel on the parsed call. Safe without the GIL: `call.keep`
// holds every buffer, and no Python object is touched.
template <class Kernel, class... Args>
void run_state_call(const StateCall& call, Kernel kernel, const Args&... args) {
    const int nt = dispatch::num_threads();
    py::gil_scoped_release nogil;
    kernel(call.ts.data(), call.ts.size(), args..., nt);
}

template <class Config>
void check_config(const Config& c) {
    const std::string err = validate(c);
    if (!err.empty()) throw py::value_error(err);
}

void sgd_format_step(py::handle params, py::handle grads, py::handle momentum_buffers,
                     py::handle absmax_momentum_buffers, py::handle param_copies, double lr,
                     double momentum, double dampening, double weight_decay, bool nesterov,
                     bool maximize, bool first_step, std::int64_t step, std::uint64_t seed,
                     const std::string& param_rounding, const std::string& state_rounding) {
    SGDConfig c;
    c.lr = lr;
    c.momentum = momentum;
    c.dampening = dampening;
    c.weight_decay = weight_decay;
    c.nesterov = nesterov;
    c.maximize = maximize;
    c.first_step = first_step;
    check_config(c);
    StateCall call;
    parse_state_call(call, params, grads, {momentum_buffers}, {absmax_momentum_buffers},
                     {"momentum_buffers"}, {momentum != 0.0}, {"when momentum != 0"}, param_copies,
                     seed, param_rounding, state_rounding);
    run_state_call(call, dispatch::format_active().sgd, c, step);
}

void rmsprop_format_step(py::handle params, py::handle grads, py::handle square_avgs,
                         py::handle momentum_buffers, py::handle grad_avgs,
                         py::handle absmax_square_avgs, py::handle absmax_momentum_buffers,
                         py::handle absmax_grad_avgs, py::handle param_copies, double lr,
                         double alpha, double eps, double weight_decay, double momentum,
                         bool centered, bool maximize, std::int64_t step, std::uint64_t seed,
                         const std::string& param_rounding, const std::string& state_rounding) {
    RMSpropConfig c;
    c.lr = lr;
    c.alpha = alpha;
    c.eps = eps;
    c.weight_decay = weight_decay;
    c.momentum = momentum;
    c.centered = centered;
    c.maximize = maximize;
    check_config(c);
    StateCall call;
    parse_state_call(call, params, grads, {square_avgs, momentum_buffers, grad_avgs},
                     {absmax_square_avgs, absmax_momentum_buffers, absmax_grad_avgs},
                     {"square_avgs", "momentum_buffers", "grad_avgs"},
                     {true, momentum > 0.0, centered},
                     {"", "when momentum > 0", "when centered=True"}, param_copies, seed,
                     param_rounding, state_rounding);
    if (centered)
        for (const FormatStateTensor& t : call.ts)
            if (t.state_format != Format::f32)
                throw py::value_error(
                    "centered=True needs float32 state: square_avg - grad_avg^2 of rounded "
                    "(bf16 or 8-bit) values can be negative");
    run_state_call(call, dispatch::format_active().rmsprop, c, step);
}

void adagrad_format_step(py::handle params, py::handle grads, py::handle sums,
                         py::handle absmax_sums, py::handle param_copies, std::int64_t step,
                         double lr, double lr_decay, double weight_decay, double eps,
                         bool maximize, std::uint64_t seed, const std::string& param_rounding,
                         const std::string& state_rounding) {
    AdagradConfig c;
    c.step = step;
    c.lr = lr;
    c.lr_decay = lr_decay;
    c.weight_decay = weight_decay;
    c.eps = eps;
    c.maximize = maximize;
    check_config(c);
    StateCall call;
    parse_state_call(call, params, grads, {sums}, {absmax_sums}, {"sums"}, {true}, {""},
                     param_copies, seed, param_rounding, state_rounding);
    run_state_call(call, dispatch::format_active().adagrad, c);
}

void adamax_format_step(py::handle params, py::handle grads, py::handle exp_avgs,
                        py::handle exp_infs, py::handle absmax_exp_avgs,
                        py::handle absmax_exp_infs, py::handle param_copies, std::int64_t step,
                        double lr, double beta1, double beta2, double eps, double weight_decay,
                        bool maximize, std::uint64_t seed, const std::string& param_rounding,
                        const std::string& state_rounding) {
    AdamaxConfig c;
    c.step = step;
    c.lr = lr;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.eps = eps;
    c.weight_decay = weight_decay;
    c.maximize = maximize;
    check_config(c);
    StateCall call;
    parse_state_call(call, params, grads, {exp_avgs, exp_infs}, {absmax_exp_avgs, absmax_exp_infs},
                     {"exp_avgs", "exp_infs"}, {true, true}, {"", ""}, param_copies, seed,
                     param_rounding, state_rounding);
    run_state_call(call, dispatch::format_active().adamax, c);
}

// NAdam and RAdam share their buffers (exp_avg, exp_avg_sq).
void parse_moments_call(StateCall& call, py::handle params, py::handle grads,
                        py::handle exp_avgs, py::handle exp_avg_sqs, py::handle absmax_exp_avgs,
                        py::handle absmax_exp_avg_sqs, py::handle param_copies,
                        std::uint64_t seed, const std::string& param_rounding,
                        const std::string& state_rounding) {
    parse_state_call(call, params, grads, {exp_avgs, exp_avg_sqs},
                     {absmax_exp_avgs, absmax_exp_avg_sqs}, {"exp_avgs", "exp_avg_sqs"},
                     {true, true}, {"", ""}, param_copies, seed,
                     param_rounding, state_rounding);
}

void nadam_format_step(py::handle params, py::handle grads, py::handle exp_avgs,
                       py::handle exp_avg_sqs, py::handle absmax_exp_avgs,
                       py::handle absmax_exp_avg_sqs, py::handle param_copies,
                       std::int64_t step, double mu_product, double lr, double beta1,
                       double beta2, double eps, double weight_decay, double momentum_decay,
                       bool decoupled_weight_decay, bool maximize, std::uint64_t seed,
                       const std::string& param_rounding, const std::string& state_rounding) {
    NAdamConfig c;
    c.step = step;
    c.mu_product = mu_product;
    c.lr = lr;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.eps = eps;
    c.weight_decay = weight_decay;
    c.momentum_decay = momentum_decay;
    c.decoupled_weight_decay = decoupled_weight_decay;
    c.maximize = maximize;
    check_config(c);
    StateCall call;
    parse_moments_call(call, params, grads, exp_avgs, exp_avg_sqs, absmax_exp_avgs,
                       absmax_exp_avg_sqs, param_copies, seed, param_rounding, state_rounding);
    run_state_call(call, dispatch::format_active().nadam, c);
}

void radam_format_step(py::handle params, py::handle grads, py::handle exp_avgs,
                       py::handle exp_avg_sqs, py::handle absmax_exp_avgs,
                       py::handle absmax_exp_avg_sqs, py::handle param_copies,
                       std::int64_t step, double lr, double beta1, double beta2, double eps,
                       double weight_decay, bool decoupled_weight_decay, bool maximize,
                       std::uint64_t seed, const std::string& param_rounding,
                       const std::string& state_rounding) {
    RAdamConfig c;
    c.step = step;
    c.lr = lr;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.eps = eps;
    c.weight_decay = weight_decay;
    c.decoupled_weight_decay = decoupled_weight_decay;
    c.maximize = maximize;
    check_config(c);
    StateCall call;
    parse_moments_call(call, params, grads, exp_avgs, exp_avg_sqs, absmax_exp_avgs,
                       absmax_exp_avg_sqs, param_copies, seed, param_rounding, state_rounding);
    run_state_call(call, dispatch::format_active().radam, c);
}

void adadelta_format_step(py::handle params, py::handle grads, py::handle square_avgs,
                          py::handle acc_deltas, py::handle absmax_square_avgs,
                          py::handle absmax_acc_deltas, py::handle param_copies, double lr,
                          double rho, double eps, double weight_decay, bool maximize,
                          std::int64_t step, std::uint64_t seed,
                          const std::string& param_rounding, const std::string& state_rounding) {
    AdadeltaConfig c;
    c.lr = lr;
    c.rho = rho;
    c.eps = eps;
    c.weight_decay = weight_decay;
    c.maximize = maximize;
    check_config(c);
    StateCall call;
    parse_state_call(call, params, grads, {square_avgs, acc_deltas},
                     {absmax_square_avgs, absmax_acc_deltas}, {"square_avgs", "acc_deltas"},
                     {true, true}, {"", ""}, param_copies, seed,
                     param_rounding, state_rounding);
    run_state_call(call, dispatch::format_active().adadelta, c, step);
}

void lion_format_step(py::handle params, py::handle grads, py::handle exp_avgs,
                      py::handle absmax_exp_avgs, py::handle param_copies, double lr,
                      double beta1, double beta2, double weight_decay, bool maximize,
                      std::int64_t step, std::uint64_t seed, const std::string& param_rounding,
                      const std::string& state_rounding) {
    LionConfig c;
    c.lr = lr;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.weight_decay = weight_decay;
    c.maximize = maximize;
    check_config(c);
    StateCall call;
    parse_state_call(call, params, grads, {exp_avgs}, {absmax_exp_avgs}, {"exp_avgs"}, {true},
                     {""}, param_copies, seed, param_rounding, state_rounding);
    run_state_call(call, dispatch::format_active().lion, c, step);
}

void ademamix_format_step(py::handle params, py::handle grads, py::handle exp_avgs,
                          py::handle exp_avg_sqs, py::handle exp_avg_slows,
                          py::handle absmax_exp_avgs, py::handle absmax_exp_avg_sqs,
                          py::handle absmax_exp_avg_slows, py::handle param_copies,
                          std::int64_t step, double lr, double beta1, double beta2,
                          double beta3, double alpha, double t_alpha_beta3, double eps,
                          double weight_decay, bool weight_decouple, bool fixed_decay,
                          bool maximize, std::uint64_t seed, const std::string& param_rounding,
                          const std::string& state_rounding) {
    AdEMAMixConfig c;
    c.step = step;
    c.lr = lr;
    c.beta1 = beta1;
    c.beta2 = beta2;
    c.beta3 = beta3;
    c.alpha = alpha;
    c.t_alpha_beta3 = t_alpha_beta3;
    c.eps = eps;
    c.weight_decay = weight_decay;
    c.weight_decouple = weight_decouple;
    c.fixed_decay = fixed_decay;
    c.maximize = maximize;
    check_config(c);
    StateCall call;
    parse_state_call(call, params, grads, {exp_avgs, exp_avg_sqs, exp_avg_slows},
                     {absmax_exp_avgs, absmax_exp_avg_sqs, absmax_exp_avg_slows},
                     {"exp_avgs", "exp_avg_sqs", "exp_avg_slows"}, {true, true, true},
                     {"", "", ""}, param_copies, seed,
                     param_rounding, state_rounding);
    run_state_call(call, dispatch::format_active().ademamix, c);
}

Format format_of_out(const Arr& a, const std::string& name) {
    switch (a.kind) {
        case Kind::bf16: return Format::bf16;
        case Kind::f16: return Format::f16;
        case Kind::u8: return Format::q8;
        default: throw py::type_error(name + " must be uint16 (bf16), float16 or uint8 (8-bit codes), got float32");
    }
}

// x (float32) -> out in the format of out's dtype.
void format_encode(py::handle x, py::handle out, py::handle absmax, bool is_signed,
                   const std::string& rounding, std::uint64_t seed, std::int64_t step) {
    FormatGate gate;
    Arr xs = gate.parse(x, "x", false);
    if (xs.kind != Kind::f32) throw py::type_error(std::string("x must be float32, got ") + kind_name(xs.kind));
    Arr o = gate.parse(out, "out", true);
    same_shape(o, "out", xs, "x");
    const Format f = format_of_out(o, "out");
    const Rounding r = parse_rounding(rounding, "rounding");
    if (r == Rounding::stochastic && f != Format::bf16)
        throw py::value_error("rounding='stochastic' is implemented for bf16 only");
    float* am = nullptr;
    if (f == Format::q8) am = absmax_of(gate, absmax, "absmax", xs.n, true);
    else if (!absmax.is_none()) throw py::value_error("absmax is only used with uint8 codes");
    gate.check_no_overlap();
    const auto kernel = dispatch::format_active().encode;
    py::gil_scoped_release nogil;  // the buffers are held by xs, o and absmax's caller
    kernel(o.data, am, static_cast<const float*>(xs.data), xs.n, f, r, is_signed, seed, step);
}

// src (bf16 / f16 / codes with absmax) -> out (float32).
void format_decode(py::handle src, py::handle out, py::handle absmax, bool is_signed) {
    FormatGate gate;
    Arr s = gate.parse(src, "src", false);
    Arr o = gate.parse(out, "out", true);
    if (o.kind != Kind::f32) throw py::type_error(std::string("out must be float32, got ") + kind_name(o.kind));
    same_shape(o, "out", s, "src");
    const Format f = format_of_out(s, "src");
    const float* am = nullptr;
    if (f == Format::q8) am = absmax_of(gate, absmax, "absmax", s.n, false);
    else if (!absmax.is_none()) throw py::value_error("absmax is only used with uint8 codes");
    gate.check_no_overlap();
    const auto kernel = dispatch::format_active().decode;
    py::gil_scoped_release nogil;
    kernel(static_cast<float*>(o.data), s.data, am, s.n, f, is_signed);
}

py::array_t<float> dynamic_map(bool is_signed) {
    py::array_t<float> out(256);
    dispatch::format_active().map(out.mutable_data(), is_signed);
    return out;
}

}  // namespace

void bind_formats(py::module_& m) {
    using namespace pybind11::literals;
    m.def("adam_format_step", &adam_format_step, "params"_a, "grads"_a, "exp_avgs"_a,
          "exp_avg_sqs"_a, "max_exp_avg_sqs"_a = py::none(), "absmax_exp_avgs"_a = py::none(),
          "absmax_exp_avg_sqs"_a = py::none(), "absmax_max_exp_avg_sqs"_a = py::none(),
          "param_copies"_a = py::none(), py::kw_only(), "step"_a, "lr"_a = 1e-3,
          "beta1"_a = 0.9, "beta2"_a = 0.999, "eps"_a = 1e-8, "weight_decay"_a = 0.0,
          "decoupled_weight_decay"_a = false, "amsgrad"_a = false, "maximize"_a = false,
          "seed"_a = 0, "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          R"doc(One Adam/AdamW step in place on lists of buffers in reduced formats, in one pass.

Each list has one entry per tensor. The dtype of a buffer is its format: params float32
(master) or bf16; grads float32, bf16 or float16; exp_avgs / exp_avg_sqs /
max_exp_avg_sqs float32, bf16 or uint8 8-bit codes (then absmax_* float32 of shape
(ceil(n / 256),) is required). bf16 is numpy uint16 (bit patterns) or torch.bfloat16.
param_copies: None or per tensor None / a bf16 or float16 copy of a float32 master,
written (rounded to nearest) in the same pass. param_rounding / state_rounding apply to
bf16 buffers: 'stochastic' draws bits from (seed, position in the list, step, element).
Math as adam_step (torch.optim.Adam), computed in float32.)doc");
    const SGDConfig sgd{};
    const RMSpropConfig rms{};
    const AdagradConfig ada{};
    const char* common =
        "\n\nBuffers as adam_format_step: params float32 (master) or bf16, grads float32, bf16\n"
        "or float16, state float32, bf16 or uint8 codes (all of one tensor in one format; uint8\n"
        "needs absmax_* float32 (ceil(n / 256),)), param_copies None or bf16/float16 copies of\n"
        "float32 masters. step keys the stochastic rounding (seed, position, step, element).\n"
        "Math as the float32 kernel, computed in float32; one pass, in place.";
    m.def("sgd_format_step", &sgd_format_step, "params"_a, "grads"_a, "momentum_buffers"_a = py::none(),
          "absmax_momentum_buffers"_a = py::none(), "param_copies"_a = py::none(), py::kw_only(),
          "lr"_a = sgd.lr, "momentum"_a = sgd.momentum, "dampening"_a = sgd.dampening,
          "weight_decay"_a = sgd.weight_decay, "nesterov"_a = sgd.nesterov,
          "maximize"_a = sgd.maximize, "first_step"_a = sgd.first_step, "step"_a = 1, "seed"_a = 0,
          "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          (std::string("One SGD step (sgd_step's math) on buffers in reduced formats; the\n"
                       "momentum buffer uses the signed 8-bit map.") + common).c_str());
    m.def("rmsprop_format_step", &rmsprop_format_step, "params"_a, "grads"_a, "square_avgs"_a,
          "momentum_buffers"_a = py::none(), "grad_avgs"_a = py::none(),
          "absmax_square_avgs"_a = py::none(), "absmax_momentum_buffers"_a = py::none(),
          "absmax_grad_avgs"_a = py::none(), "param_copies"_a = py::none(), py::kw_only(),
          "lr"_a = rms.lr, "alpha"_a = rms.alpha, "eps"_a = rms.eps,
          "weight_decay"_a = rms.weight_decay, "momentum"_a = rms.momentum,
          "centered"_a = rms.centered, "maximize"_a = rms.maximize, "step"_a = 1, "seed"_a = 0,
          "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          (std::string("One RMSprop step (rmsprop_step's math) on buffers in reduced formats;\n"
                       "square_avg uses the unsigned 8-bit map, momentum_buffer and grad_avg the\n"
                       "signed one.") + common).c_str());
    m.def("adagrad_format_step", &adagrad_format_step, "params"_a, "grads"_a, "sums"_a,
          "absmax_sums"_a = py::none(), "param_copies"_a = py::none(), py::kw_only(), "step"_a,
          "lr"_a = ada.lr, "lr_decay"_a = ada.lr_decay, "weight_decay"_a = ada.weight_decay,
          "eps"_a = ada.eps, "maximize"_a = ada.maximize, "seed"_a = 0,
          "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          (std::string("One Adagrad step (adagrad_step's math) on buffers in reduced formats;\n"
                       "sum uses the unsigned 8-bit map.") + common).c_str());
    const AdamaxConfig amx{};
    const NAdamConfig nad{};
    const RAdamConfig rad{};
    const AdadeltaConfig add{};
    const LionConfig lion{};
    const AdEMAMixConfig ema{};
    const char* step_required =
        "\nstep (required) is the step being taken (1 first); it drives the bias corrections\n"
        "and keys the stochastic rounding.";
    m.def("adamax_format_step", &adamax_format_step, "params"_a, "grads"_a, "exp_avgs"_a,
          "exp_infs"_a, "absmax_exp_avgs"_a = py::none(), "absmax_exp_infs"_a = py::none(),
          "param_copies"_a = py::none(), py::kw_only(), "step"_a, "lr"_a = amx.lr,
          "beta1"_a = amx.beta1, "beta2"_a = amx.beta2, "eps"_a = amx.eps,
          "weight_decay"_a = amx.weight_decay, "maximize"_a = amx.maximize, "seed"_a = 0,
          "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          (std::string("One Adamax step (adamax_step's math) on buffers in reduced formats;\n"
                       "exp_avg uses the signed 8-bit map, exp_inf the unsigned one.") +
           step_required + common).c_str());
    m.def("nadam_format_step", &nadam_format_step, "params"_a, "grads"_a, "exp_avgs"_a,
          "exp_avg_sqs"_a, "absmax_exp_avgs"_a = py::none(), "absmax_exp_avg_sqs"_a = py::none(),
          "param_copies"_a = py::none(), py::kw_only(), "step"_a, "mu_product"_a,
          "lr"_a = nad.lr, "beta1"_a = nad.beta1, "beta2"_a = nad.beta2, "eps"_a = nad.eps,
          "weight_decay"_a = nad.weight_decay, "momentum_decay"_a = nad.momentum_decay,
          "decoupled_weight_decay"_a = nad.decoupled_weight_decay, "maximize"_a = nad.maximize,
          "seed"_a = 0, "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          (std::string("One NAdam step (nadam_step's math) on buffers in reduced formats;\n"
                       "exp_avg uses the signed 8-bit map, exp_avg_sq the unsigned one.\n"
                       "mu_product (required, a float: the caller keeps it) includes this step's mu.") +
           step_required + common).c_str());
    m.def("radam_format_step", &radam_format_step, "params"_a, "grads"_a, "exp_avgs"_a,
          "exp_avg_sqs"_a, "absmax_exp_avgs"_a = py::none(), "absmax_exp_avg_sqs"_a = py::none(),
          "param_copies"_a = py::none(), py::kw_only(), "step"_a, "lr"_a = rad.lr,
          "beta1"_a = rad.beta1, "beta2"_a = rad.beta2, "eps"_a = rad.eps,
          "weight_decay"_a = rad.weight_decay,
          "decoupled_weight_decay"_a = rad.decoupled_weight_decay, "maximize"_a = rad.maximize,
          "seed"_a = 0, "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          (std::string("One RAdam step (radam_step's math) on buffers in reduced formats;\n"
                       "exp_avg uses the signed 8-bit map, exp_avg_sq the unsigned one.") +
           step_required + common).c_str());
    m.def("adadelta_format_step", &adadelta_format_step, "params"_a, "grads"_a, "square_avgs"_a,
          "acc_deltas"_a, "absmax_square_avgs"_a = py::none(), "absmax_acc_deltas"_a = py::none(),
          "param_copies"_a = py::none(), py::kw_only(), "lr"_a = add.lr, "rho"_a = add.rho,
          "eps"_a = add.eps, "weight_decay"_a = add.weight_decay, "maximize"_a = add.maximize,
          "step"_a = 1, "seed"_a = 0, "param_rounding"_a = "stochastic",
          "state_rounding"_a = "nearest",
          (std::string("One Adadelta step (adadelta_step's math) on buffers in reduced formats;\n"
                       "square_avg and acc_delta use the unsigned 8-bit map.") + common).c_str());
    m.def("lion_format_step", &lion_format_step, "params"_a, "grads"_a, "exp_avgs"_a,
          "absmax_exp_avgs"_a = py::none(), "param_copies"_a = py::none(), py::kw_only(),
          "lr"_a = lion.lr, "beta1"_a = lion.beta1, "beta2"_a = lion.beta2,
          "weight_decay"_a = lion.weight_decay, "maximize"_a = lion.maximize, "step"_a = 1,
          "seed"_a = 0, "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          (std::string("One Lion step (lion_step's math) on buffers in reduced formats;\n"
                       "exp_avg uses the signed 8-bit map.") + common).c_str());
    m.def("ademamix_format_step", &ademamix_format_step, "params"_a, "grads"_a, "exp_avgs"_a,
          "exp_avg_sqs"_a, "exp_avg_slows"_a, "absmax_exp_avgs"_a = py::none(),
          "absmax_exp_avg_sqs"_a = py::none(), "absmax_exp_avg_slows"_a = py::none(),
          "param_copies"_a = py::none(), py::kw_only(), "step"_a, "lr"_a = ema.lr,
          "beta1"_a = ema.beta1, "beta2"_a = ema.beta2, "beta3"_a = ema.beta3,
          "alpha"_a = ema.alpha, "t_alpha_beta3"_a = ema.t_alpha_beta3, "eps"_a = ema.eps,
          "weight_decay"_a = ema.weight_decay, "weight_decouple"_a = ema.weight_decouple,
          "fixed_decay"_a = ema.fixed_decay, "maximize"_a = ema.maximize, "seed"_a = 0,
          "param_rounding"_a = "stochastic", "state_rounding"_a = "nearest",
          (std::string("One AdEMAMix step (ademamix_step's math) on buffers in reduced formats;\n"
                       "exp_avg and exp_avg_slow use the signed 8-bit map, exp_avg_sq the\n"
                       "unsigned one.") + step_required + common).c_str());
    m.def("format_encode", &format_encode, "x"_a, "out"_a, "absmax"_a = py::none(), py::kw_only(),
          "signed"_a = true, "rounding"_a = "nearest", "seed"_a = 0, "step"_a = 1,
          "Store float32 x into out's format (uint16: bf16, float16, uint8: 8-bit codes + absmax).");
    m.def("format_decode", &format_decode, "src"_a, "out"_a, "absmax"_a = py::none(), py::kw_only(),
          "signed"_a = true, "Load src (bf16 / float16 / 8-bit codes + absmax) into float32 out.");
    m.def("dynamic_map", &dynamic_map, "signed"_a = true,
          "The 256 values of the signed or unsigned 8-bit dynamic map (ascending).");
    m.def("format_kernels", [] { return std::string(dispatch::format_active().name); },
          "Name of the active format kernels (the SIMD target, or 'avx512bf16').");
    m.def("set_bf16_instructions", &dispatch::set_bf16_instructions, "allowed"_a,
          "Allow or forbid the AVX-512-BF16 variant of the format kernels; returns the previous setting.");
    m.def("cpu_has_avx512bf16", &dispatch::cpu_has_avx512bf16, "Whether this CPU has AVX-512-BF16.");
    m.def("set_fused_formats", [](bool allowed) {
              return fused_formats_enabled.exchange(allowed);
          }, "allowed"_a,
          "Allow or forbid the fused AVX-512 paths of the Adam format kernels (the general path\n"
          "gives bitwise the same results; tests compare them); returns the previous setting.");
}

}  // namespace fastoptim::bind
