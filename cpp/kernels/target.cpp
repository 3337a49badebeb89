// Instantiates every kernel for one SIMD target (FASTOPTIM_TARGET = scalar | avx2 | avx512)
// inside namespace fastoptim::<target>, and publishes them as a dispatch table.
// CMake compiles this file once per target with that target's -march flags only.
#define FASTOPTIM_KERNEL_NS FASTOPTIM_TARGET
#include "fastoptim/kernels.hpp"
#include "dispatch/table.hpp"

#define FO_STR2(x) #x
#define FO_STR(x) FO_STR2(x)
#define FO_CAT2(a, b) a##b
#define FO_CAT(a, b) FO_CAT2(a, b)

namespace fastoptim::dispatch {

namespace {
template <class T>
Ops<T> make_ops() {
    namespace k = fastoptim::FASTOPTIM_TARGET;
    return Ops<T>{&k::sgd_multi<T>, &k::adam_multi<T>, &k::sumsq_multi<T>, &k::scale_multi<T>,
                  &k::stream_update<T>, &k::rmsprop_multi<T>, &k::adagrad_multi<T>,
                  &k::point_loss<T>, &k::softmax_xent<T>,
                  &k::bias_act_forward<T>, &k::act_backward<T>, &k::penalty<T>,
                  &k::dropout_forward<T>};
}
}  // namespace

const KernelTable* FO_CAT(table_, FASTOPTIM_TARGET)() {
    static const KernelTable table{FO_STR(FASTOPTIM_TARGET), make_ops<float>(),
                                   make_ops<double>()};
    return &table;
}

}  // namespace fastoptim::dispatch
