// The fastops operator library: every schema, in one place. Kernels register per backend in
// <family>/<family>_cpu.cpp and <family>/<family>_cuda.cpp; fake kernels, autograd and autocast in fastops/ops/.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "activations/activation_math.h"
#include "common/cpu_features.h"

TORCH_LIBRARY(fastops, m) {
  // ---- activations ----
  // Each activation with its own op in activations/activation_math.h's table (whose rows say what each computes):
  // <name>(Tensor x, <float parameters>) -> Tensor and <name>_backward(Tensor grad_output, Tensor x, <float
  // parameters>) -> Tensor, the backward reading the saved `result` instead of x where the table says so (relu,
  // sigmoid, tanh). Outputs keep x's layout when x is dense.
  for (int i = 0; i < fastops::act::kCount; ++i) {
    const auto a = static_cast<fastops::Activation>(i);
    if (!fastops::has_own_op(a)) continue;
    const std::string name = fastops::activation_name(a), params = fastops::act::row(a).params;
    const std::string saved = fastops::backward_reads_output(a) ? "result" : "x";
    m.def((name + "(Tensor x" + params + ") -> Tensor").c_str());
    m.def((name + "_backward(Tensor grad_output, Tensor " + saved + params + ") -> Tensor").c_str());
  }
  // gelu(x) = x * Phi(x) with the exact erf CDF (approximate='none') or torch's tanh approximation ('tanh').
  m.def("gelu(Tensor x, str approximate='none') -> Tensor");
  // d gelu from the forward input x.
  m.def("gelu_backward(Tensor grad_output, Tensor x, str approximate='none') -> Tensor");
  // act(x + bias) for x [..., N], bias [N]; act one of the table's fused activations (relu, gelu, gelu_tanh, silu,
  // sigmoid, tanh). Contiguous output.
  m.def("bias_act(Tensor x, Tensor bias, str act) -> Tensor");
  // (grad_x, grad_bias) of bias_act in one pass over grad_output and x; grad_bias is the column sum of grad_x. With
  // bias None (linear_act without a bias): grad_x = grad_output * act'(x) and an empty grad_bias.
  m.def("bias_act_backward(Tensor grad_output, Tensor x, Tensor? bias, str act) -> (Tensor, Tensor)");
  // swiglu(gate, up) = silu(gate) * up, gate and up of one shape.
  m.def("swiglu(Tensor gate, Tensor up) -> Tensor");
  // swiglu on one [..., 2H] tensor: gate = x[..., :H], up = x[..., H:], read in place. Output [..., H].
  m.def("swiglu.packed(Tensor x) -> Tensor");
  // geglu(gate, up) = gelu(gate, approximate) * up.
  m.def("geglu(Tensor gate, Tensor up, str approximate='none') -> Tensor");
  // geglu on one [..., 2H] tensor split into gate and up halves in place.
  m.def("geglu.packed(Tensor x, str approximate='none') -> Tensor");
  // (grad_gate, grad_up) of act(gate) * up in one pass; act as for bias_act (silu for swiglu, gelu/gelu_tanh geglu).
  m.def("glu_backward(Tensor grad_output, Tensor gate, Tensor up, str act) -> (Tensor, Tensor)");
  // Gradient of the packed gated unit: one [..., 2H] tensor holding grad_gate then grad_up.
  m.def("glu_packed_backward(Tensor grad_output, Tensor x, str act) -> Tensor");
  // torch's glu: a * sigmoid(b) with a, b the halves of x along dim (torch's checks and messages). Contiguous output.
  m.def("glu(Tensor x, int dim=-1) -> Tensor");
  // Gradient of glu: one tensor of x's shape holding grad_a then grad_b along dim.
  m.def("glu_dim_backward(Tensor grad_output, Tensor x, int dim) -> Tensor");

  // ---- softmax ----
  // softmax(x) along `dim` (any dim, wrapped as torch wraps it; a 0-dim x is one element): exp(x - max) / sum, the
  // sum accumulated in double. Contiguous output, as torch's.
  m.def("softmax(Tensor x, int dim) -> Tensor");
  // log_softmax(x) = (x - max) - log(sum exp(x - max)) along `dim`.
  m.def("log_softmax(Tensor x, int dim) -> Tensor");
  // d softmax from the saved output y: y * (grad_output - sum(grad_output * y)) along dim.
  m.def("softmax_backward(Tensor grad_output, Tensor output, int dim) -> Tensor");
  // d log_softmax from the saved output y: grad_output - exp(y) * sum(grad_output) along dim.
  m.def("log_softmax_backward(Tensor grad_output, Tensor output, int dim) -> Tensor");

  // ---- losses ----
  // `reduction` is torch's enum: 0 none, 1 mean, 2 sum. Loss math runs in float32 (float64 for float64 inputs).
  // torch.nn.functional.cross_entropy's whole contract (class indices or probabilities, weight, ignore_index,
  // label_smoothing, [C] / [N, C] / [N, C, d...], autocast): a composite of the row ops below
  // (losses/cross_entropy_loss.cpp).
  m.def("cross_entropy_loss(Tensor input, Tensor target, Tensor? weight=None, int reduction=1, "
        "int ignore_index=-100, float label_smoothing=0.0) -> Tensor");
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
  // cross_entropy_loss's kernel call: the rows' loss reduced in the kernel ('none': [N], 'mean' / 'sum': []) and
  // rounded once to `dtype` from float64, per row the lse and target mass of cross_entropy_forward for the backward,
  // and the float64 divisor of 'mean' (the summed weight of the rows not ignored; 1 for 'none' / 'sum').
  m.def("cross_entropy_loss_forward(Tensor logits, Tensor target, Tensor? weight, int reduction, int ignore_index, "
        "float label_smoothing, ScalarType dtype) -> (Tensor loss, Tensor lse, Tensor target_mass, Tensor divisor)");
  // The same for 'mean' / 'sum' that also writes the gradient, so that the backward only scales it (scale_rows_):
  // grad_logits = grad_scale * d loss / d logits with grad_scale (float64, []) 1 / divisor for 'mean' and 1 for 'sum',
  // computed on the device (no host sync). Each row is read twice and its gradient written once.
  m.def("cross_entropy_loss_forward_grad(Tensor logits, Tensor target, Tensor? weight, int reduction, "
        "int ignore_index, float label_smoothing, ScalarType dtype) -> (Tensor loss, Tensor grad_logits, "
        "Tensor grad_scale)");
  // The row kernel of the forward with the gradient, written over the (contiguous) logits: with u_i = grad_scale[i]
  // (float64, one element or one per row), returns loss_i = u_i * (the row's loss, float64) and overwrites the logits
  // with d loss_i / d logits_i. Fused linear + cross entropy's scratch chunk.
  m.def("cross_entropy_forward_grad_(Tensor(a!) logits, Tensor target, Tensor? weight, int ignore_index, "
        "float label_smoothing, Tensor grad_scale) -> Tensor loss");
  // The gradient of a block of classes, in place: logits [N, Cb] holds classes class_start .. class_start + Cb - 1 of
  // a num_classes-class problem and is overwritten with grad_scale[i] * (target_mass[i] exp(z - lse[i]) - q_ij), where
  // lse and target_mass come from cross_entropy_forward over all the classes. target: int64 [N] class indices (of all
  // num_classes) or the block's [N, Cb] probabilities; weight: the block's [Cb] class weights. Fused linear + cross
  // entropy gets each vocabulary block's weight gradient from one GEMM over all tokens with it.
  m.def("cross_entropy_block_grad_(Tensor(a!) logits, Tensor target, Tensor? weight, Tensor lse, Tensor target_mass, "
        "Tensor grad_scale, int class_start, int num_classes, int ignore_index, float label_smoothing) -> ()");
  // x[r, ...] *= scale[r] (scale: float64, one element or one per row) in place; rows whose factor is exactly 1 are
  // not written, so the backward of a loss called with gradient 1 costs one launch. A building block of backward
  // passes that rescale their own saved gradients (csrc/losses/losses_autograd.cpp: cross entropy's), which is why no
  // ADInplaceOrView kernel bumps x's version: a retained graph's next backward reads that gradient again.
  m.def("scale_rows_(Tensor(a!) x, Tensor scale) -> ()");
  // torch.nn.functional.nll_loss's whole contract (weight, ignore_index, reductions, input [C] / [N, C] /
  // [N, C, d...], torch's argument rules and messages, autocast): a composite over nll_loss_forward
  // (losses/cross_entropy_loss.cpp).
  m.def("nll_loss(Tensor input, Tensor target, Tensor? weight=None, int reduction=1, int ignore_index=-100) -> Tensor");
  // Per row r of input [C] / [N, C] / [N, C, d...] (target: one int64 class per row, N * d1 * ... of them): the loss
  // -w[t_r] * input[r, t_r] and the row's weight w[t_r] (1 without weights), both float64 and 0 where t_r equals
  // ignore_index. An out-of-range class raises IndexError ("Target 7 is out of bounds."); on CUDA its row's loss is
  // NaN and the error is raised without a host sync (csrc/losses/kernel_errors.h).
  m.def("nll_loss_forward(Tensor input, Tensor target, Tensor? weight, int ignore_index)"
        " -> (Tensor loss, Tensor row_weight)");
  // d (sum_r grad_rows[r] * loss_r) / d input: -w[t_r] * grad_rows[r] at each kept row's target element, 0 elsewhere;
  // grad_rows is float64 [rows]. Input-shaped and contiguous.
  m.def("nll_loss_backward(Tensor grad_rows, Tensor input, Tensor target, Tensor? weight, int ignore_index) -> Tensor");
  // (input - target)^2, reduced; input and target share one shape and dtype.
  m.def("mse_loss(Tensor input, Tensor target, int reduction=1) -> Tensor");
  // d mse_loss / d input for the loss's gradient grad_output (input-shaped for 'none', 0-dim otherwise).
  m.def("mse_loss_backward(Tensor grad_output, Tensor input, Tensor target, int reduction) -> Tensor");
  // |input - target|, reduced; input and target share one shape (their dtypes promote, as torch's).
  m.def("l1_loss(Tensor input, Tensor target, int reduction=1) -> Tensor");
  // d l1_loss / d input: sign(input - target) times the loss's gradient.
  m.def("l1_loss_backward(Tensor grad_output, Tensor input, Tensor target, int reduction) -> Tensor");
  // Binary cross entropy of probabilities: -weight (t log x + (1 - t) log(1 - x)), each log clamped at -100 as in
  // torch; input and target of one shape and dtype, weight (optional) of their shape. The CPU kernel refuses inputs
  // or targets outside [0, 1] with torch's messages; the CUDA kernel gives an input outside [0, 1] a NaN loss and
  // records it, raised without a host sync (csrc/losses/kernel_errors.h). CUDA autocast refuses it, as torch does.
  m.def("binary_cross_entropy(Tensor input, Tensor target, Tensor? weight=None, int reduction=1) -> Tensor");
  // d binary_cross_entropy / d input: weight (x - t) / max((1 - x) x, 1e-12), as torch's.
  m.def("binary_cross_entropy_backward(Tensor grad_output, Tensor input, Tensor target, Tensor? weight, "
        "int reduction) -> Tensor");
  // Smooth L1: 0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (d = input - target).
  m.def("smooth_l1_loss(Tensor input, Tensor target, int reduction=1, float beta=1.0) -> Tensor");
  // d smooth_l1_loss / d input.
  m.def("smooth_l1_loss_backward(Tensor grad_output, Tensor input, Tensor target, int reduction, float beta) -> Tensor");
  // Huber: 0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere.
  m.def("huber_loss(Tensor input, Tensor target, int reduction=1, float delta=1.0) -> Tensor");
  // d huber_loss / d input.
  m.def("huber_loss_backward(Tensor grad_output, Tensor input, Tensor target, int reduction, float delta) -> Tensor");
  // Kullback-Leibler divergence, torch.kl_div's pointwise form and reductions ('batchmean' is the functional's sum
  // divided by the batch): t (log t - x) with 0 where t == 0 (xlogy), or exp(t) (t - x) with log_target; input and
  // target share one shape, their dtypes promote, integral ones are refused with torch's message.
  m.def("kl_div(Tensor input, Tensor target, int reduction=1, bool log_target=False) -> Tensor");
  // d kl_div / d input: -t (or -exp(t) with log_target) times the loss's gradient.
  m.def("kl_div_backward(Tensor grad_output, Tensor input, Tensor target, int reduction, bool log_target) -> Tensor");
  // weight * [(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)]; weight / pos_weight have input's shape when given.
  m.def("binary_cross_entropy_with_logits(Tensor input, Tensor target, Tensor? weight=None, Tensor? pos_weight=None, "
        "int reduction=1) -> Tensor");
  // d binary_cross_entropy_with_logits / d input.
  m.def("binary_cross_entropy_with_logits_backward(Tensor grad_output, Tensor input, Tensor target, Tensor? weight, "
        "Tensor? pos_weight, int reduction) -> Tensor");

  // ---- matmul ----
  // torch.matmul for operands of >= 2 dims: (..., m, k) x (..., k, n) -> (broadcast batch..., m, n), contiguous;
  // transposed operands and broadcast batches are read in place. CUDA float32 uses TF32 tensor cores iff torch's
  // float32 matmul precision allows it (torch.backends.cuda.matmul.allow_tf32).
  m.def("matmul(Tensor a, Tensor b) -> Tensor");
  // torch.nn.functional.linear: x (..., in) . weight (out, in)^T + bias (out), bias fused into the GEMM epilogue.
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor");
  // act(linear(x, weight, bias)) for act in relu, gelu, gelu_tanh, silu, and the product before the bias, which the
  // backward (bias_act_backward) reads: always when autograd records a backward, else only when store_pre (else
  // `pre` is empty). On Hopper one GEMM applies the activation in its epilogue; elsewhere the GEMM is followed by one
  // fused bias + activation pass.
  m.def("linear_act(Tensor x, Tensor weight, Tensor? bias, str act, bool store_pre) -> (Tensor out, Tensor pre)");
  // Linear's bias gradient: grad_output (..., out) summed over every dim but the last (one column reduction).
  m.def("bias_grad(Tensor grad_output) -> Tensor");
  // out += a @ b in place: 2-D a (m, k), b (k, n), row-major out (m, n), one dtype, fp32 accumulation, one rounding.
  m.def("matmul_accumulate_(Tensor(a!) out, Tensor a, Tensor b) -> ()");
  // The CUDA GEMM plan (csrc/matmul/gemm_plan.h) for a described problem on a described device, as
  // "kernel=...;tile_n=...;..." (tests check the decisions without a GPU; no memory is touched). ld: [lda, ldb, ldc]
  // (empty: dense), offset: elements added to 256-byte aligned bases of [a, b, c, pre] (empty: none).
  m.def("_gemm_plan(ScalarType dtype, int m, int n, int k, *, int batch=1, bool a_trans=False, bool b_trans=False, "
        "int[] ld=[], int[] offset=[], bool accumulate=False, bool bias=False, bool fuse_act=False, bool pre=False, "
        "bool allow_tf32=False, int cc=90, int num_sms=132, bool tma=True) -> str");
  // Re-reads the kernel-variant switches (FASTOPS_NO_SM90, FASTOPS_SM90_NO_CLUSTER, FASTOPS_SM90_DIRECT_STORE), which
  // the GEMMs otherwise read once per process: the benchmark calls it when it sets them for a provider.
  m.def("_refresh_kernel_switches() -> ()");
}

// `import fastops._C` loads this shared library, whose static initialisers run the registrations above. The module
// has one function: _best_cpu_level() names the best CPU kernel level this machine runs (common/cpu_features.h),
// which fastops/__init__.py loads. Only the limited C API is used, so one build serves every CPython >= 3.10.
namespace {
PyObject* best_cpu_level(PyObject*, PyObject*) {
  return PyUnicode_FromString(fastops::kCpuLevels[fastops::best_cpu_level()]);
}

PyMethodDef methods[] = {
    {"_best_cpu_level", best_cpu_level, METH_NOARGS, "The best CPU kernel level this CPU and OS support."},
    {nullptr, nullptr, 0, nullptr}};
}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fastops operator library", -1, methods};
  return PyModule_Create(&module);
}
