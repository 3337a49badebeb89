"""Type stubs of fastoptim._core, the native extension (private; use the fastoptim package).

Arrays: a numpy.ndarray or a dense CPU torch.Tensor, or a list/tuple of them, never copied.
The optimizer-step section is generated from the kernel declarations
(``fastoptim.spec.core_stub()``; tests/test_spec.py checks it is current).
"""

from typing import Any, TypeAlias

_Arrays: TypeAlias = Any
_Array: TypeAlias = Any

kernel_specs: dict[str, dict[str, Any]]

# runtime
def simd_target() -> str: ...
def simd_targets() -> list[str]: ...
def compiled_simd_targets() -> list[str]: ...
def set_simd_target(name: str) -> None: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def have_openmp() -> bool: ...

# reductions and the roofline reference
def global_norm(arrays: _Arrays) -> float: ...
def clip_by_global_norm(grads: _Arrays, max_norm: float, *,
                        error_if_nonfinite: bool = False) -> float: ...
def roofline_update(outs: list[_Array], x: _Array, min_per_thread: int = 32768) -> None: ...

# reduced-precision formats (cpp/bindings/bind_formats.cpp; see fastoptim.formats)
def adam_format_step(params: _Arrays, grads: _Arrays, exp_avgs: _Arrays, exp_avg_sqs: _Arrays,
                     max_exp_avg_sqs: _Arrays | None = None,
                     absmax_exp_avgs: _Arrays | None = None,
                     absmax_exp_avg_sqs: _Arrays | None = None,
                     absmax_max_exp_avg_sqs: _Arrays | None = None,
                     param_copies: _Arrays | None = None, *, step: int, lr: float = 0.001,
                     beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-08,
                     weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                     amsgrad: bool = False, maximize: bool = False, seed: int = 0,
                     param_rounding: str = "stochastic",
                     state_rounding: str = "nearest") -> None: ...
# the other optimizers' format steps: params, grads, the state lists in the optimizer's
# order, their absmax lists (8-bit codes), param_copies; then the float32 kernel's
# hyperparameters, seed and the roundings (as adam_format_step)
def sgd_format_step(params: _Arrays, grads: _Arrays, momentum_buffers: _Arrays | None = None,
                    absmax_momentum_buffers: _Arrays | None = None,
                    param_copies: _Arrays | None = None, *, lr: float = 0.001,
                    momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                    nesterov: bool = False, maximize: bool = False, first_step: bool = False,
                    step: int = 1, seed: int = 0, param_rounding: str = "stochastic",
                    state_rounding: str = "nearest") -> None: ...
def rmsprop_format_step(params: _Arrays, grads: _Arrays, square_avgs: _Arrays,
                        momentum_buffers: _Arrays | None = None,
                        grad_avgs: _Arrays | None = None,
                        absmax_square_avgs: _Arrays | None = None,
                        absmax_momentum_buffers: _Arrays | None = None,
                        absmax_grad_avgs: _Arrays | None = None,
                        param_copies: _Arrays | None = None, *, lr: float = 0.01,
                        alpha: float = 0.99, eps: float = 1e-08, weight_decay: float = 0.0,
                        momentum: float = 0.0, centered: bool = False, maximize: bool = False,
                        step: int = 1, seed: int = 0, param_rounding: str = "stochastic",
                        state_rounding: str = "nearest") -> None: ...
def adagrad_format_step(params: _Arrays, grads: _Arrays, sums: _Arrays,
                        absmax_sums: _Arrays | None = None,
                        param_copies: _Arrays | None = None, *, step: int, lr: float = 0.01,
                        lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                        maximize: bool = False, seed: int = 0,
                        param_rounding: str = "stochastic",
                        state_rounding: str = "nearest") -> None: ...
def adamax_format_step(params: _Arrays, grads: _Arrays, exp_avgs: _Arrays, exp_infs: _Arrays,
                       absmax_exp_avgs: _Arrays | None = None,
                       absmax_exp_infs: _Arrays | None = None,
                       param_copies: _Arrays | None = None, *, step: int, lr: float = 0.002,
                       beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-08,
                       weight_decay: float = 0.0, maximize: bool = False, seed: int = 0,
                       param_rounding: str = "stochastic",
                       state_rounding: str = "nearest") -> None: ...
def nadam_format_step(params: _Arrays, grads: _Arrays, exp_avgs: _Arrays,
                      exp_avg_sqs: _Arrays, absmax_exp_avgs: _Arrays | None = None,
                      absmax_exp_avg_sqs: _Arrays | None = None,
                      param_copies: _Arrays | None = None, *, step: int, mu_product: float,
                      lr: float = 0.002, beta1: float = 0.9, beta2: float = 0.999,
                      eps: float = 1e-08, weight_decay: float = 0.0,
                      momentum_decay: float = 0.004, decoupled_weight_decay: bool = False,
                      maximize: bool = False, seed: int = 0,
                      param_rounding: str = "stochastic",
                      state_rounding: str = "nearest") -> None: ...
def radam_format_step(params: _Arrays, grads: _Arrays, exp_avgs: _Arrays,
                      exp_avg_sqs: _Arrays, absmax_exp_avgs: _Arrays | None = None,
                      absmax_exp_avg_sqs: _Arrays | None = None,
                      param_copies: _Arrays | None = None, *, step: int, lr: float = 0.001,
                      beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-08,
                      weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                      maximize: bool = False, seed: int = 0,
                      param_rounding: str = "stochastic",
                      state_rounding: str = "nearest") -> None: ...
def adadelta_format_step(params: _Arrays, grads: _Arrays, square_avgs: _Arrays,
                         acc_deltas: _Arrays, absmax_square_avgs: _Arrays | None = None,
                         absmax_acc_deltas: _Arrays | None = None,
                         param_copies: _Arrays | None = None, *, lr: float = 1.0,
                         rho: float = 0.9, eps: float = 1e-06, weight_decay: float = 0.0,
                         maximize: bool = False, step: int = 1, seed: int = 0,
                         param_rounding: str = "stochastic",
                         state_rounding: str = "nearest") -> None: ...
def lion_format_step(params: _Arrays, grads: _Arrays, exp_avgs: _Arrays,
                     absmax_exp_avgs: _Arrays | None = None,
                     param_copies: _Arrays | None = None, *, lr: float = 0.0001,
                     beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0,
                     maximize: bool = False, step: int = 1, seed: int = 0,
                     param_rounding: str = "stochastic",
                     state_rounding: str = "nearest") -> None: ...
def ademamix_format_step(params: _Arrays, grads: _Arrays, exp_avgs: _Arrays,
                         exp_avg_sqs: _Arrays, exp_avg_slows: _Arrays,
                         absmax_exp_avgs: _Arrays | None = None,
                         absmax_exp_avg_sqs: _Arrays | None = None,
                         absmax_exp_avg_slows: _Arrays | None = None,
                         param_copies: _Arrays | None = None, *, step: int, lr: float = 0.001,
                         beta1: float = 0.9, beta2: float = 0.999, beta3: float = 0.9999,
                         alpha: float = 5.0, t_alpha_beta3: float = 0.0, eps: float = 1e-08,
                         weight_decay: float = 0.0, weight_decouple: bool = False,
                         fixed_decay: bool = False, maximize: bool = False, seed: int = 0,
                         param_rounding: str = "stochastic",
                         state_rounding: str = "nearest") -> None: ...
def format_encode(x: _Array, out: _Array, absmax: _Array | None = None, *, signed: bool = True,
                  rounding: str = "nearest", seed: int = 0, step: int = 1) -> None: ...
def format_decode(src: _Array, out: _Array, absmax: _Array | None = None, *,
                  signed: bool = True) -> None: ...
def dynamic_map(signed: bool = True) -> Any: ...
def format_kernels() -> str: ...
def set_bf16_instructions(allowed: bool) -> bool: ...
def set_fused_formats(allowed: bool) -> bool: ...
def cpu_has_avx512bf16() -> bool: ...

# validated pointer lists for the torch adapter (cpp/bindings/bind_pointers.cpp)
class _PointerList: ...
def _pointer_list(arrays: Any, writable: bool) -> _PointerList: ...
def _grad_pointers(grads: list[Any], like: _PointerList) -> _PointerList: ...
def _sumsq(lists: list[Any]) -> float: ...
class _ArenaCheck:
    def __init__(self, plan_params: list[Any], agrads: list[Any], ptrs: list[int],
                 gptrs: list[int]) -> None: ...
    def __call__(self, params: list[Any], since_zeroed: bool) -> bool: ...
    def versions(self) -> list[int]: ...
def _fast_grads(params: list[Any], plan_params: list[Any],
                like: _PointerList) -> _PointerList | None: ...
def _counters_at(steps: Any, step: int) -> bool: ...
def _register_torch_types(types: tuple[type, type]) -> bool: ...

class _SteadyCall:
    def __init__(self, fn: Any, like: _PointerList, states: tuple[Any, ...],
                 fixed: list[tuple[str, Any]], sources: list[tuple[str, str, int]],
                 kernel_step: bool, first_step: bool, steps: Any,
                 structure: list[tuple[str, bool]]) -> None: ...
    def __call__(self, params: list[Any], plan_params: list[Any], group: dict[str, Any],
                 step: int, fresh: bool, grads: _PointerList | None = None) -> bool: ...

# losses, layers, regularizers
def point_loss(kind: str, input: _Array, target: _Array, out: _Array | None = None, *,
               reduction: str = "mean", delta: float = 1.0) -> float: ...
def softmax_cross_entropy(logits: _Array, target: _Array, out: _Array | None = None, *,
                          weight: _Array | None = None, label_smoothing: float = 0.0,
                          reduction: str = "mean") -> float: ...
def penalty(params: _Arrays, grads: _Arrays | None = None, *, l1: float = 0.0,
            l2: float = 0.0) -> float: ...
def bias_act_forward(z: _Array, y: _Array | None = None, bias: _Array | None = None, *,
                     activation: str | None = None, alpha: float = 0.01) -> None: ...
def act_backward(dy: _Array, dz: _Array | None = None, z: _Array | None = None,
                 y: _Array | None = None, dbias: _Array | None = None, *,
                 activation: str | None = None, alpha: float = 0.01,
                 accumulate_bias: bool = False) -> None: ...
def dropout_forward(x: _Array, y: _Array, mask: _Array, *, p: float, seed: int,
                    stream: int = 0, offset: int = 0) -> None: ...

# non-elementwise optimizers (cpp/bindings/bind_factored.cpp; fastoptim.spec declare_special)
def adafactor_step(params: _Arrays, grads: _Arrays, row_vars: list[_Array | None],
                   col_vars: list[_Array | None], variances: list[_Array | None], *, step: int,
                   lr: float = 0.01, beta2_decay: float = -0.8, eps1: float = -1.0,
                   eps2: float = 0.001, d: float = 1.0, weight_decay: float = 0.0,
                   maximize: bool = False) -> None: ...
def muon_momentum(outs: _Arrays, grads: _Arrays, momentum_buffers: _Arrays, *,
                  momentum: float = 0.95, nesterov: bool = True) -> None: ...
def muon_update(params: _Arrays, updates: _Arrays, alphas: list[float], *, lr: float = 0.001,
                weight_decay: float = 0.1) -> None: ...
def sparse_adam_step(param: _Array, exp_avg: _Array, exp_avg_sq: _Array, rows: _Array,
                     values: _Array, *, step: int, lr: float = 0.001, beta1: float = 0.9,
                     beta2: float = 0.999, eps: float = 1e-08, maximize: bool = False) -> None: ...

# optimizer steps (generated: fastoptim.spec.core_stub())
def adadelta_step(
    params: _Arrays,
    grads: _Arrays,
    square_avgs: _Arrays,
    acc_deltas: _Arrays,
    *,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-06,
    weight_decay: float = 0.0,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def adagrad_step(
    params: _Arrays,
    grads: _Arrays,
    sums: _Arrays,
    *,
    step: int,
    lr: float = 0.01,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def adam_step(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    max_exp_avg_sqs: _Arrays | None = None,
    *,
    step: int,
    lr: float = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-08,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def adamax_step(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_infs: _Arrays,
    *,
    step: int,
    lr: float = 0.002,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-08,
    weight_decay: float = 0.0,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def ademamix_step(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    exp_avg_slows: _Arrays,
    *,
    step: int,
    lr: float = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    beta3: float = 0.9999,
    alpha: float = 5.0,
    t_alpha_beta3: float = 0.0,
    eps: float = 1e-08,
    weight_decay: float = 0.0,
    weight_decouple: bool = False,
    fixed_decay: bool = False,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def asgd_step(
    params: _Arrays,
    grads: _Arrays,
    axs: _Arrays,
    *,
    eta: float,
    mu: float,
    lambd: float = 0.0001,
    weight_decay: float = 0.0,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def lamb_step(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    *,
    step: int,
    lr: float = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-06,
    weight_decay: float = 0.0,
    weight_decouple: bool = True,
    fixed_decay: bool = False,
    grad_averaging: bool = True,
    adam: bool = False,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def lars_step(
    params: _Arrays,
    grads: _Arrays,
    momentum_buffers: _Arrays | None = None,
    *,
    lr: float = 0.001,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    dampening: float = 0.0,
    trust_coefficient: float = 0.001,
    nesterov: bool = False,
    maximize: bool = False,
    trust: bool = True,
    grad_scale: float = 1.0,
) -> None: ...
def lion_step(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    *,
    lr: float = 0.0001,
    beta1: float = 0.9,
    beta2: float = 0.99,
    weight_decay: float = 0.0,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def nadam_step(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    *,
    step: int,
    mu_product: float,
    lr: float = 0.002,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-08,
    weight_decay: float = 0.0,
    momentum_decay: float = 0.004,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def radam_step(
    params: _Arrays,
    grads: _Arrays,
    exp_avgs: _Arrays,
    exp_avg_sqs: _Arrays,
    *,
    step: int,
    lr: float = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-08,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def rmsprop_step(
    params: _Arrays,
    grads: _Arrays,
    square_avgs: _Arrays,
    momentum_buffers: _Arrays | None = None,
    grad_avgs: _Arrays | None = None,
    *,
    lr: float = 0.01,
    alpha: float = 0.99,
    eps: float = 1e-08,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def rprop_step(
    params: _Arrays,
    grads: _Arrays,
    prevs: _Arrays,
    step_sizes: _Arrays,
    *,
    etaminus: float = 0.5,
    etaplus: float = 1.2,
    step_size_min: float = 1e-06,
    step_size_max: float = 50.0,
    maximize: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def schedulefree_adamw_step(
    params: _Arrays,
    grads: _Arrays,
    zs: _Arrays,
    exp_avg_sqs: _Arrays,
    *,
    lr: float = 0.0025,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-08,
    weight_decay: float = 0.0,
    ckp1: float,
    bias_correction2: float,
    grad_scale: float = 1.0,
) -> None: ...
def schedulefree_sgd_step(
    params: _Arrays,
    grads: _Arrays,
    zs: _Arrays,
    *,
    lr: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    ckp1: float,
    grad_scale: float = 1.0,
) -> None: ...
def sgd_step(
    params: _Arrays,
    grads: _Arrays,
    momentum_buffers: _Arrays | None = None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    first_step: bool = False,
    grad_scale: float = 1.0,
) -> None: ...
def lerp_(arrays: _Arrays, ends: _Arrays, *, weight: float) -> None: ...
