// The fastops operator library: every schema, in one place. Kernels register per backend in
// <family>/<family>_cpu.cpp and <family>/<family>_cuda.cpp; fake kernels, autograd and autocast in fastops/ops/.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(fastops, m) {
  // ---- activations ----
  // relu(x) = max(x, 0), NaN propagated; output keeps x's layout when x is dense.
  m.def("relu(Tensor x) -> Tensor");
  // d relu: grad_output where the saved forward output is > 0 (or NaN), else 0.
  m.def("relu_backward(Tensor grad_output, Tensor result) -> Tensor");

  // ---- losses ----
  // `reduction` is torch's enum: 0 none, 1 mean, 2 sum. Loss math runs in float32 (float64 for float64 inputs).
  // Softmax cross entropy of each row of [N, C] logits. target: int64 [N] class indices (rows equal to ignore_index
  // count for nothing) or [N, C] class probabilities; weight: [C] class weights in the math type. Returns per row:
  // the loss, the row's weight (w[target], 0 when ignored, 1 for probabilities; 'mean' divides by their sum) and
  // the logsumexp in float64, and the target mass in the math type (what the backward needs besides the logits).
  m.def("cross_entropy_forward(Tensor logits, Tensor target, Tensor? weight, int ignore_index, float label_smoothing)"
        " -> (Tensor loss, Tensor row_weight, Tensor lse, Tensor target_mass)");
  // d loss / d logits for the per-row upstream gradient grad_rows [N] (float64), recomputed from the logits and the forward's
  // lse / target_mass.
  m.def("cross_entropy_backward(Tensor grad_rows, Tensor logits, Tensor target, Tensor? weight, Tensor lse, "
        "Tensor target_mass, int ignore_index, float label_smoothing) -> Tensor");
  // (input - target)^2, reduced; input and target share one shape and dtype.
  m.def("mse_loss(Tensor input, Tensor target, int reduction=1) -> Tensor");
  // d mse_loss / d input for the loss's gradient grad_output (input-shaped for 'none', 0-dim otherwise).
  m.def("mse_loss_backward(Tensor grad_output, Tensor input, Tensor target, int reduction) -> Tensor");
  // Smooth L1: 0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (d = input - target).
  m.def("smooth_l1_loss(Tensor input, Tensor target, int reduction=1, float beta=1.0) -> Tensor");
  // d smooth_l1_loss / d input.
  m.def("smooth_l1_loss_backward(Tensor grad_output, Tensor input, Tensor target, int reduction, float beta) -> Tensor");
  // Huber: 0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere.
  m.def("huber_loss(Tensor input, Tensor target, int reduction=1, float delta=1.0) -> Tensor");
  // d huber_loss / d input.
  m.def("huber_loss_backward(Tensor grad_output, Tensor input, Tensor target, int reduction, float delta) -> Tensor");
  // weight * [(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)]; weight / pos_weight have input's shape when given.
  m.def("binary_cross_entropy_with_logits(Tensor input, Tensor target, Tensor? weight=None, Tensor? pos_weight=None, "
        "int reduction=1) -> Tensor");
  // d binary_cross_entropy_with_logits / d input.
  m.def("binary_cross_entropy_with_logits_backward(Tensor grad_output, Tensor input, Tensor target, Tensor? weight, "
        "Tensor? pos_weight, int reduction) -> Tensor");
}

// `import fastops._C` loads this shared library, whose static initialisers run the registrations above; the
// module itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fastops operator library", -1, nullptr};
  return PyModule_Create(&module);
}
