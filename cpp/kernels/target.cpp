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
    Ops<T> o{};  // every member assigned by name below; a missing one stays null
    o.sgd = &k::sgd_multi<T>;
    o.adam = &k::adam_multi<T>;
    o.rmsprop = &k::rmsprop_multi<T>;
    o.adagrad = &k::adagrad_multi<T>;
    o.adamax = &k::adamax_multi<T>;
    o.nadam = &k::nadam_multi<T>;
    o.radam = &k::radam_multi<T>;
    o.adadelta = &k::adadelta_multi<T>;
    o.rprop = &k::rprop_multi<T>;
    o.asgd = &k::asgd_multi<T>;
    o.lion = &k::lion_multi<T>;
    o.ademamix = &k::ademamix_multi<T>;
    o.adafactor = &k::adafactor_multi<T>;
    o.muon_momentum = &k::muon_momentum_multi<T>;
    o.muon_update = &k::muon_update_multi<T>;
    o.sparse_adam = &k::sparse_adam_rows<T>;
    o.schedulefree_adamw = &k::schedulefree_adamw_multi<T>;
    o.schedulefree_sgd = &k::schedulefree_sgd_multi<T>;
    o.lerp = &k::lerp_multi<T>;
    o.lamb = &k::lamb_multi<T>;
    o.lars = &k::lars_multi<T>;
    o.sumsq = &k::sumsq_multi<T>;
    o.scale = &k::scale_multi<T>;
    o.stream = &k::stream_update<T>;
    o.point_loss = &k::point_loss<T>;
    o.softmax_xent = &k::softmax_xent<T>;
    o.bias_act_forward = &k::bias_act_forward<T>;
    o.act_backward = &k::act_backward<T>;
    o.penalty = &k::penalty<T>;
    o.dropout = &k::dropout_forward<T>;
    return o;
}
}  // namespace

const KernelTable* FO_CAT(table_, FASTOPTIM_TARGET)() {
    static const KernelTable table{FO_STR(FASTOPTIM_TARGET), make_ops<float>(),
                                   make_ops<double>()};
    return &table;
}

}  // namespace fastoptim::dispatch
