// fastoptim._core: creates the module and lets each area bind its functions.
#include <pybind11/pybind11.h>

#include "dispatch/table.hpp"

namespace fastoptim::bind {
void bind_runtime(pybind11::module_& m);
void bind_optimizers(pybind11::module_& m);
void bind_adaptive(pybind11::module_& m);
void bind_factored(pybind11::module_& m);
void bind_losses(pybind11::module_& m);
void bind_nn(pybind11::module_& m);
void bind_formats(pybind11::module_& m);
void bind_pointers(pybind11::module_& m);
void bind_schedulefree(pybind11::module_& m);
void bind_trust_ratio(pybind11::module_& m);
}  // namespace fastoptim::bind

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastoptim native kernels (private; use the fastoptim package)";
    // FASTOPTIM_SIMD=scalar|avx2|avx512 forces a target; an unsupported one fails the import.
    fastoptim::dispatch::init_from_environment();
    // OpenMP's thread pool does not survive fork(): forked children run serially.
    fastoptim::dispatch::install_fork_guard();
    fastoptim::bind::bind_runtime(m);
    fastoptim::bind::bind_optimizers(m);
    fastoptim::bind::bind_adaptive(m);
    fastoptim::bind::bind_factored(m);
    fastoptim::bind::bind_losses(m);
    fastoptim::bind::bind_nn(m);
    fastoptim::bind::bind_formats(m);
    fastoptim::bind::bind_pointers(m);
    fastoptim::bind::bind_schedulefree(m);
    fastoptim::bind::bind_trust_ratio(m);
}
