// Runtime controls: SIMD target and thread count.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace py = pybind11;

void bind_runtime(py::module_& m) {
    using namespace pybind11::literals;
    m.def("simd_target", [] { return std::string(dispatch::active().name); },
          "Name of the active SIMD target: 'scalar', 'avx2' or 'avx512'.");
    m.def("simd_targets", [] {
            std::vector<std::string> out;
            for (const std::string& t : dispatch::compiled_targets())
                if (dispatch::cpu_supports(t)) out.push_back(t);
            return out;
        }, "SIMD targets compiled in and supported by this CPU, worst first.");
    m.def("compiled_simd_targets", &dispatch::compiled_targets,
          "Every SIMD target compiled into this build, supported by this CPU or not.");
    m.def("set_simd_target", &dispatch::set_target, "name"_a,
          "Switch the active SIMD target (for tests and benchmarks). ValueError for an unknown "
          "name, RuntimeError if this CPU lacks it.");
    m.def("get_num_threads", &dispatch::num_threads,
          "Threads the kernels may use (OpenMP's max threads; OMP_NUM_THREADS sets the default). "
          "1 in a child created by fork(): OpenMP's thread pool does not survive fork(), so "
          "forked children run serially; use the spawn or forkserver start method for "
          "multi-threaded children.");
    m.def("set_num_threads", &dispatch::set_num_threads, "n"_a,
          "Set the number of threads the kernels may use (n >= 1).");
    m.def("have_openmp", &dispatch::have_openmp, "Whether this build uses OpenMP.");
}

}  // namespace fastoptim::bind
