// fastoptim public C++ API for the model toolkit: loss, activation and regularizer
// settings. Plain data only; the kernels are in fastoptim/kernels/{losses,activations,
// regularizers}.hpp.
#pragma once

#include <cstdint>

namespace fastoptim {

// Elementwise losses of a prediction against a target of the same shape.
enum class PointLoss : int {
    mse = 0,         // (p - t)^2
    mae = 1,         // |p - t|
    huber = 2,       // 0.5 d^2 if |d| <= delta else delta (|d| - 0.5 delta)  (torch HuberLoss)
    bce_logits = 3,  // max(x, 0) - x t + log(1 + exp(-|x|))               (torch BCEWithLogits)
};

struct PointLossConfig {
    PointLoss kind = PointLoss::mse;
    double scale = 1.0;  // multiplies the summed loss and the gradient: 1/n for a mean
    double delta = 1.0;  // Huber threshold (> 0)
};

// Softmax cross-entropy on logits [rows, classes] with torch.nn.functional.cross_entropy's
// semantics for class weights and label smoothing.
struct XentConfig {
    double label_smoothing = 0.0;  // in [0, 1]
    bool mean = true;              // false: sum over rows
};

// Activation functions, fused with a bias add (forward) or a bias gradient (backward).
enum class Act : int {
    none = 0,
    relu = 1,
    leaky_relu = 2,  // x if x > 0 else alpha x
    sigmoid = 3,
    tanh = 4,
    gelu_tanh = 5,  // torch GELU(approximate='tanh')
    gelu = 6,       // torch GELU(): 0.5 x (1 + erf(x / sqrt 2))
    softmax = 7,    // over each row
};

struct ActConfig {
    Act act = Act::none;
    double alpha = 0.01;  // LeakyReLU negative slope
};

}  // namespace fastoptim
