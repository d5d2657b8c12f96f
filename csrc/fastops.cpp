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
}

// `import fastops._C` loads this shared library, whose static initialisers run the registrations above; the
// module itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fastops operator library", -1, nullptr};
  return PyModule_Create(&module);
}
