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

  // ---- matmul ----
  // torch.matmul for operands of >= 2 dims: (..., m, k) x (..., k, n) -> (broadcast batch..., m, n), contiguous;
  // transposed operands and broadcast batches are read in place. CUDA float32 uses TF32 tensor cores iff torch's
  // float32 matmul precision allows it (torch.backends.cuda.matmul.allow_tf32).
  m.def("matmul(Tensor a, Tensor b) -> Tensor");
  // torch.nn.functional.linear: x (..., in) . weight (out, in)^T + bias (out), bias fused into the GEMM epilogue.
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor");
  // Linear's bias gradient: grad_output (..., out) summed over every dim but the last (one column reduction).
  m.def("bias_grad(Tensor grad_output) -> Tensor");
}

// `import fastops._C` loads this shared library, whose static initialisers run the registrations above; the
// module itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fastops operator library", -1, nullptr};
  return PyModule_Create(&module);
}
