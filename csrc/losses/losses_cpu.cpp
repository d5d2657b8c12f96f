// CPU loss kernels. Cross entropy: one task per block of rows, three vectorised sweeps over each row (max, sum of
// exponentials with the target terms, gradient), all math in float (double for float64). Elementwise losses: the
// operands are widened a block at a time into float buffers, the scalar formulas of loss_math.h run over the
// buffers (simple enough for the compiler to vectorise), and the block is stored or summed.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/ops/all.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <type_traits>
#include <limits>
#include <vector>

#include "common/cpu_elementwise.h"
#include "common/cpu_vec_math.h"
#include "losses/loss_math.h"
#include "losses/losses.h"

namespace fastops {
namespace {

using cpu::opmath_t;
using cpu::Vectorized;

template <typename A>
A reduce_sum(const Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>([](const Vectorized<A>& a, const Vectorized<A>& b) { return a + b; }, v);
}

// ---- cross entropy ----

// With q_j the target's weight on class j (one-hot and/or smoothed, times the class weight) and B = sum_j q_j (the
// target mass):
//   loss = sum_j q_j (lse - z_j) = B log(s) - sum_j q_j (z_j - m),   s = sum_j exp(z_j - m), m = max_j z_j
//   d loss / d z_j = B softmax_j - q_j = B exp(z_j - lse) - q_j
// Class-index targets: q_j = (1 - eps) w_y [j == y] + eps / C w_j; probabilities: q_j = w_j ((1-eps) t_j + eps / C).
// The one-hot term is handled apart from the vector loops, which see only the smoothing / probability part.
template <typename T, bool kProb, bool kWeighted>
struct CrossEntropyRows {
  using Scalar = T;
  using A = opmath_t<T>;
  using V = Vectorized<A>;
  using VD = Vectorized<double>;
  static constexpr int64_t kW = V::size();
  static constexpr int64_t kFlush = 16;
  // float32 rows sum exponentials taken in double (exp_to_float, within 2e-13): the loss is then off by its final
  // rounding alone. Float exponentials (an ulp each) summed in float erred 1.2e-7 on two [2, 37] float32 rows where
  // torch erred 5e-10 (by luck), 1.3x the accuracy rule's bound (random small samples at the portable level), and
  // the backward's softmax, from the forward's lse, inherited it (1.03x on [40, 36] at avx2). 16-bit logits keep
  // float exponentials, far below their results' rounding.
  static constexpr bool kExactExp = std::is_same_v<T, float>;

  const CrossEntropyTensors& ce;
  int64_t ignore_index;
  int64_t c = ce.logits.size(1);  // the row length: classes class_start .. class_start + c - 1 of num_classes
  int64_t class_start = ce.class_start, num_classes = ce.num_classes;
  const T* logits = ce.logits.template const_data_ptr<T>();
  const A* weight = kWeighted ? ce.weight.template const_data_ptr<A>() : nullptr;
  const T* prob = kProb ? ce.target.template const_data_ptr<T>() : nullptr;
  const int64_t* index = kProb ? nullptr : ce.target.template const_data_ptr<int64_t>();
  double keep;    // 1 - eps: the weight of the target class (index targets) or of the probabilities
  double spread;  // eps / num_classes: the smoothing mass per class
  bool smooth = kProb || spread > 0;  // false: q is one-hot and the vector loops skip it
  std::atomic<int64_t> bad_row{-1};

  CrossEntropyRows(const CrossEntropyTensors& t, int64_t ignore, double eps)
      : ce(t), ignore_index(ignore), keep(1.0 - eps), spread(eps / static_cast<double>(t.num_classes)) {}

  // q_j without the one-hot term, for kW classes starting at j (math type) and for class j alone (double: the
  // per-row scalars are accumulated in double).
  // A tail (j + kW > c) reads only classes j .. c - 1.
  V q_vec(const T* t, int64_t j) const {
    const bool tail = j + kW > c;
    V q = V(static_cast<A>(spread));
    if constexpr (kProb) {
      q = (tail ? load_tail(t, j, A(0)) : cpu::load_opmath(t + j)) * V(static_cast<A>(keep)) + q;
    }
    if constexpr (kWeighted) q = q * V::loadu(weight + j, tail ? c - j : kW);
    return q;
  }
  double q_one(const T* t, int64_t j) const {
    double q = kProb ? static_cast<double>(t[j]) * keep + spread : spread;
    if constexpr (kWeighted) q *= static_cast<double>(weight[j]);
    return q;
  }

  // The class of row i (of all num_classes), or -1 when the row is ignored or its class is out of range (then
  // remembered for the error).
  int64_t target_class(int64_t i) {
    if constexpr (kProb) return 0;
    const int64_t y = index[i];
    if (y == ignore_index) return -1;
    if (y < 0 || y >= num_classes) {
      bad_row.store(i);
      return -1;
    }
    return y;
  }
  double one_hot_weight(int64_t y) const {
    if constexpr (kProb) return 0;
    return keep * (kWeighted ? static_cast<double>(weight[y]) : 1.0);
  }

  void raise_if_bad_target() const {
    const int64_t bad = bad_row.load();
    TORCH_CHECK_INDEX(bad < 0, "fastops.cross_entropy: target ", bad < 0 ? 0 : index[bad], " (row ", bad,
                      ") is out of bounds for ", num_classes, " classes (ignore_index is ", ignore_index, ")");
  }

  // Rows per thread at least. A class costs a few elementwise operations (two sweeps, an exponential) and a row
  // some more (its reductions and logarithm): counted as one elementwise grain per thread, [4096, 8] ran on one
  // thread, 55 us against torch's 24 on two.
  int64_t grain() const { return std::max<int64_t>(1, cpu::kElementwiseGrain / (4 * c + 64)); }

  // qz = sum_j q_j (z_j - m) and qsum = sum_j q_j over the row without the one-hot term, in double: each term is
  // then exact but for one rounding (z_j - m is exact in double, q_j a product of at most three inputs), and the row's
  // loss B log s - qz, where the two cancel, keeps its accuracy. Terms in the math type (float) cost a short
  // weighted probability-target row one ulp of its loss: 8 classes, loss 39.1, erred 4.8e-6 at the portable level
  // (one 8-lane vector) where torch's erred 9.8e-7. Vectors of the math type are converted to double ones and summed
  // per lane (a plain double loop over the row, which converted every bfloat16 target one at a time, made a smoothed
  // [1024, 32000] bfloat16 forward 2x slower).
  struct TargetSums {
    static constexpr int64_t kParts = kW / VD::size();  // double vectors per vector of the math type
    VD qz[kParts], qsum[kParts];
    double tail_qz = 0, tail_qsum = 0;

    TargetSums() {
      for (int64_t h = 0; h < kParts; ++h) qz[h] = qsum[h] = VD(0);
    }
    // The kW classes j .. j + kW - 1, whose logits (in the math type) are zj.
    void add_vector(const CrossEntropyRows& rows, const V& zj, const T* t, int64_t j, double m) {
      __at_align__ double zd[kW], td[kW], wd[kW];
      to_double(zj, zd);
      if constexpr (kProb) to_double(cpu::load_opmath(t + j), td);
      if constexpr (kWeighted) to_double(V::loadu(rows.weight + j), wd);
      for (int64_t h = 0; h < kParts; ++h) {
        const VD d = VD::loadu(zd + h * VD::size()) - VD(m);
        VD q = kProb ? at::vec::fmadd(VD::loadu(td + h * VD::size()), VD(rows.keep), VD(rows.spread)) : VD(rows.spread);
        if constexpr (kWeighted) q = q * VD::loadu(wd + h * VD::size());
        qz[h] = at::vec::fmadd(q, d, qz[h]);
        qsum[h] = qsum[h] + q;
      }
    }
    void add(double q, double d) {
      tail_qz += q * d;
      tail_qsum += q;
    }
    static double total(const VD* parts, double tail) {
      for (int64_t h = 0; h < kParts; ++h) tail += reduce_sum(parts[h]);
      return tail;
    }
  };

  // A row's loss terms: log s, qz and qsum of the file comment (one-hot term included), the row maximum m. row_sums
  // leaves s itself in log_s; block_terms takes the logarithms of a block of rows together.
  struct RowTerms {
    double m, log_s, qz, qsum;
    double loss() const { return qsum * log_s - qz; }
    double lse() const { return m + log_s; }
  };

  // Rows are taken in blocks of up to kBlockRows (and about kBlockElems elements: forward_grad reads them again to
  // write their gradients), whose log s go through vector logarithms together: one std::log per row took a quarter of
  // a [4096, 16] float32 forward's time. In double for every dtype (torch's own log_softmax takes the logarithm of
  // its sum in the math type); float64 rows keep std::log, correctly rounded, for their float64 result.
  static constexpr int64_t kBlockRows = 16, kBlockElems = 8192;
  int64_t block_rows() const { return std::clamp<int64_t>(kBlockElems / std::max<int64_t>(c, 1), 1, kBlockRows); }

  // Rows of at most kShortRow classes with one-hot targets go a block at a time, transposed (class j of the block's
  // rows side by side): each row's maximum and exponentials are then vertical vector steps, without the horizontal
  // reductions, padded tail vector and per-row scalar work that dominate a row of a vector or two. [4096, 10] float32
  // at avx2, one thread, paired with torch (70 and 157 us): forward 105 -> 91 us, with gradient 230 -> 154 us (the
  // rows' arithmetic became exact on the way, kExactExp). The exponentials are summed in double; the forward with
  // gradient takes them in double (ShortBlock) and the gradient B u e_j / s from them, rounded once, as
  // write_grad_float's. 16-bit logits' forward alone takes float exponentials (their loss may then differ from the
  // forward with gradient's in its float64 digits, far below its rounding).
  static constexpr int64_t kShortRow = 2 * kW;
  bool short_rows() const { return !std::is_same_v<A, double> && !smooth && c <= kShortRow; }
  static_assert(kBlockRows % kW == 0, "a block of short rows is whole vectors");
  struct ShortBlock {
    __at_align__ double e[kShortRow * kBlockRows];  // e[j * kBlockRows + r]: exp(z_j - m) of the block's row r
    __at_align__ double s[kBlockRows];              // s of row r: sum_j e[j * kBlockRows + r]
  };

  // zt[j * kBlockRows + r] = class j of row i0 + r for the block's rows r < width that are live (r < n, y[r] >= 0),
  // 0 for the others.
  template <typename D>
  void transpose_block(int64_t i0, int64_t n, int64_t width, const int64_t* y, D* zt) const {
    for (int64_t r = 0; r < width; ++r) {
      if (r < n && y[r] >= 0) {
        const T* z = logits + (i0 + r) * c;
        for (int64_t j = 0; j < c; ++j) zt[j * kBlockRows + r] = static_cast<D>(z[j]);
      } else {
        for (int64_t j = 0; j < c; ++j) zt[j * kBlockRows + r] = D(0);
      }
    }
  }

  // The maxima m[r] and sums of exp(z_j - m) s[r] of rows i0 .. i0 + n - 1 (short_rows()), by float exponentials.
  void short_rows_sums(int64_t i0, int64_t n, const int64_t* y, A* m, double* s) const {
    __at_align__ A e[kShortRow * kBlockRows];
    const int64_t width = (n + kW - 1) / kW * kW;
    transpose_block(i0, n, width, y, e);
    for (int64_t h = 0; h < width; h += kW) {
      V vm = V::loadu(e + h);
      for (int64_t j = 1; j < c; ++j) vm = cpu::vmath::maximum(vm, V::loadu(e + j * kBlockRows + h));
      for (int64_t j = 0; j < c; ++j) {
        cpu::vmath::exp(V::loadu(e + j * kBlockRows + h) - vm).store(e + j * kBlockRows + h);
      }
      vm.store(m + h);
    }
    std::fill_n(s, width, 0.0);
    for (int64_t j = 0; j < c; ++j) {
      for (int64_t r = 0; r < width; ++r) s[r] += static_cast<double>(e[j * kBlockRows + r]);
    }
  }

  // The same by double exponentials, kept in blk.
  void short_rows_sums(int64_t i0, int64_t n, const int64_t* y, A* m, ShortBlock& blk) const {
    double* e = blk.e;
    const int64_t width = (n + VD::size() - 1) / VD::size() * VD::size();
    transpose_block(i0, n, width, y, e);
    __at_align__ double maxima[kBlockRows];
    for (int64_t h = 0; h < width; h += VD::size()) {
      VD vm = VD::loadu(e + h);
      for (int64_t j = 1; j < c; ++j) vm = cpu::vmath::maximum(vm, VD::loadu(e + j * kBlockRows + h));
      VD vs(0);
      for (int64_t j = 0; j < c; ++j) {
        const VD ej = cpu::vmath::exp_to_float(VD::loadu(e + j * kBlockRows + h) - vm);
        ej.store(e + j * kBlockRows + h);
        vs = vs + ej;
      }
      vm.store(maxima + h);
      vs.store(blk.s + h);
    }
    for (int64_t r = 0; r < n; ++r) m[r] = static_cast<A>(maxima[r]);
  }

  // The gradients of rows i0 .. i0 + n - 1 (short_rows()) for their terms, upstream factors u[r] and blk from
  // short_rows_sums.
  void short_rows_grad(int64_t i0, int64_t n, const int64_t* y, const RowTerms* terms, const double* u,
                       const ShortBlock& blk, T* grad) const {
    // The target classes' p_y - 1 through double vectors: std::expm1 per row took 8% of a [4096, 10] forward with
    // gradient.
    __at_align__ double factor[kBlockRows], p_y_minus_1[kBlockRows] = {};
    for (int64_t r = 0; r < n; ++r) {  // every target logit is read before any row is written (grad may be the logits)
      if (y[r] < 0) continue;
      factor[r] = terms[r].qsum * u[r] / blk.s[r];
      p_y_minus_1[r] = (static_cast<double>(logits[(i0 + r) * c + y[r]]) - terms[r].m) - terms[r].log_s;
    }
    for (int64_t h = 0; h < n; h += VD::size()) VD::loadu(p_y_minus_1 + h).expm1().store(p_y_minus_1 + h);
    for (int64_t r = 0; r < n; ++r) {
      if (y[r] < 0) continue;
      T* g = grad + (i0 + r) * c;
      for (int64_t j = 0; j < c; ++j) g[j] = static_cast<T>(blk.e[j * kBlockRows + r] * factor[r]);
      write_target_grad(p_y_minus_1[r], nullptr, y[r], terms[r].qsum, u[r], g);
    }
  }

  // The terms of rows i0 .. i0 + n - 1 into terms[] and their classes into y[] (-1: ignored, terms unset).
  // Short rows keep their double exponentials in blk where it is given (the forward with gradient).
  void block_terms(int64_t i0, int64_t n, RowTerms* terms, int64_t* y, ShortBlock* blk) {
    __at_align__ double s[kBlockRows];
    __at_align__ A m[kBlockRows];
    std::fill_n(s, kBlockRows, 1.0);  // log 1 for ignored rows and past the block's last
    for (int64_t r = 0; r < n; ++r) y[r] = target_class(i0 + r);
    if (short_rows()) {
      if (blk != nullptr || kExactExp) {
        ShortBlock local;
        ShortBlock& kept = blk != nullptr ? *blk : local;
        short_rows_sums(i0, n, y, m, kept);
        std::copy_n(kept.s, n, s);
      } else {
        short_rows_sums(i0, n, y, m, s);
      }
      for (int64_t r = 0; r < n; ++r) {
        if (y[r] < 0) continue;
        const double w = one_hot_weight(y[r]);
        terms[r] = {static_cast<double>(m[r]), s[r],
                    w * (static_cast<double>(logits[(i0 + r) * c + y[r]]) - static_cast<double>(m[r])), w};
      }
    } else {
      // One sweep at a time over all rows of the block: a short row's sweep is a chain of dependent steps (load,
      // maximum, horizontal maximum, exponentials, horizontal sum), and rows taken one after the other left the
      // core waiting on each.
      for (int64_t r = 0; r < n; ++r) {
        if (y[r] >= 0) m[r] = row_max(logits + (i0 + r) * c);
      }
      for (int64_t r = 0; r < n; ++r) {
        if (y[r] < 0) continue;
        terms[r] = row_sums(logits + (i0 + r) * c, kProb ? prob + (i0 + r) * c : nullptr, y[r], m[r]);
        s[r] = terms[r].log_s;
      }
    }
    if constexpr (std::is_same_v<A, double>) {
      for (int64_t r = 0; r < n; ++r) s[r] = std::log(s[r]);
    } else {
      for (int64_t r = 0; r < n; r += VD::size()) VD::loadu(s + r).log().store(s + r);
    }
    for (int64_t r = 0; r < n; ++r) terms[r].log_s = s[r];
  }

  // A row of class y (>= 0): two sweeps, row_max and row_sums.
  RowTerms row_terms(const T* z, const T* t, int64_t y) const {
    RowTerms r = row_sums(z, t, y, row_max(z));
    r.log_s = std::log(r.log_s);
    return r;
  }

  // Sweep 1: the row maximum (NaN propagates through maximum()).
  A row_max(const T* z) const {
    int64_t j = 0;
    V vmax(-std::numeric_limits<A>::infinity());
    for (; j + kW <= c; j += kW) vmax = cpu::vmath::maximum(vmax, cpu::load_opmath(z + j));
    if (j < c) vmax = cpu::vmath::maximum(vmax, load_tail(z, j, -std::numeric_limits<A>::infinity()));
    return at::vec::vec_reduce_all<A>([](const V& a, const V& b) { return at::vec::maximum(a, b); }, vmax);
  }

  // Whether the classes j .. c - 1 left after whole vectors (fewer than kW) go through one more vector, padded, rather
  // than scalar loops: in float math. The scalar loops' std::exp in double took a third of a [4096, 10] float32
  // forward's time at the avx2 level (two of ten classes per row), most of it for a row of fewer classes than a
  // vector holds. float64 keeps them: its exponentials stay correctly rounded.
  static constexpr bool kVectorTail = !std::is_same_v<A, double>;

  static void to_double(const V& v, double* out) {
    __at_align__ A lanes[kW];
    v.store(lanes);
    for (int64_t l = 0; l < kW; ++l) out[l] = static_cast<double>(lanes[l]);
  }

  // x[k] = exp(x[k]) for k < count (and up to the end of the last double vector), by cpu::vmath::exp_to_float.
  static void exp_lanes(double* x, int64_t count) {
    for (int64_t h = 0; h < count; h += VD::size()) cpu::vmath::exp_to_float(VD::loadu(x + h)).store(x + h);
  }

  // Classes j .. c - 1 (fewer than kW) in the math type, the lanes past them set to fill.
  V load_tail(const T* z, int64_t j, A fill) const {
    const int64_t count = c - j;
    if constexpr (std::is_same_v<T, A>) {
      return V::set(V(fill), V::loadu(z + j, count), count);
    } else {
      __at_align__ A lanes[kW];
      for (int64_t k = 0; k < kW; ++k) lanes[k] = k < count ? static_cast<A>(z[j + k]) : fill;
      return V::loadu(lanes);
    }
  }

  // Stores lanes 0 .. c - j - 1 of v to g[j ..] (the classes past whole vectors).
  void store_tail(T* g, int64_t j, const V& v) const {
    const int64_t count = c - j;
    if constexpr (std::is_same_v<T, A>) {
      v.store(g + j, count);
    } else {
      __at_align__ A lanes[kW];
      v.store(lanes);
      for (int64_t k = 0; k < count; ++k) g[j + k] = static_cast<T>(lanes[k]);
    }
  }

  // Sweep 2: s = sum exp(z - m) (left in log_s) and the target sums (TargetSums). Vector lanes add at most kFlush
  // vectors of exponentials in the math type before their total moves to double: long rows lose no accuracy to the
  // sum.
  RowTerms row_sums(const T* z, const T* t, int64_t y, A m) const {
    const double md = static_cast<double>(m);
    double s = 0;
    TargetSums sums;
    int64_t j = 0;
    if constexpr (kExactExp) {
      cpu::vmath::ExpSumDouble exps;
      for (; j + kW <= c; j += kW) {
        const V zj = cpu::load_opmath(z + j);
        exps.add(zj, md);
        if (smooth) sums.add_vector(*this, zj, t, j, md);
      }
      s = exps.total();
    }
    while (j + kW <= c) {
      V vs(0);
      for (int64_t k = 0; k < kFlush && j + kW <= c; ++k, j += kW) {
        const V zj = cpu::load_opmath(z + j);
        vs = vs + cpu::vmath::exp(zj - V(m));
        if (smooth) sums.add_vector(*this, zj, t, j, md);
      }
      s += reduce_sum(vs);
    }
    if (kVectorTail && j < c) {
      // exp(z_j - m) with z_j - m exact in double, as in the scalar loop. Padded with d = 0, whose exponentials are
      // then zeroed: padding with -inf made float exponentials underflow through denormals, which AVX2 multiplies in
      // microcode (half of a [4096, 10] forward's time).
      const int64_t count = c - j;
      __at_align__ double e[kW];
      to_double(load_tail(z, j, m), e);
      for (int64_t k = 0; k < kW; ++k) e[k] -= md;
      exp_lanes(e, count);
      VD e_sum(0);
      for (int64_t h = 0; h < count; h += VD::size()) e_sum = e_sum + VD::set(VD(0), VD::loadu(e + h), count - h);
      // Lane by lane: at::vec's reduction of an AVX-512 double vector goes through overlapping stack stores, whose
      // forwarding stalls doubled a [4096, 17] forward's time.
      __at_align__ double lanes[VD::size()];
      e_sum.store(lanes);
      for (const double e : lanes) s += e;
      for (; smooth && j < c; ++j) sums.add(q_one(t, j), static_cast<double>(z[j]) - md);
      j = c;
    }
    for (; j < c; ++j) {
      const double d = static_cast<double>(z[j]) - md;
      s += std::exp(d);
      if (smooth) sums.add(q_one(t, j), d);
    }
    // Without smoothing the sums stayed zero: their horizontal reductions (through the stack) took half of a
    // [512, 97] float32 forward's time.
    double qz = smooth ? TargetSums::total(sums.qz, sums.tail_qz) : 0.0;
    double qsum = smooth ? TargetSums::total(sums.qsum, sums.tail_qsum) : 0.0;
    if constexpr (!kProb) {
      qz += one_hot_weight(y) * (static_cast<double>(z[y]) - static_cast<double>(m));
      qsum += one_hot_weight(y);
    }
    return {static_cast<double>(m), s, qz, qsum};
  }

  // g_j = (B exp(z_j - lse) - q_j) u for row z whose class is column y, rounded once (no one-hot term when y is
  // outside the row: a block of classes without the target); g may be z itself (in place: every element is read
  // before it is written, and the target logit is read first). lse = m + log_s (row maximum and log of the shifted
  // sum).
  void write_grad(const T* z, const T* t, int64_t y, double m, double log_s, double b, double u, T* g) const {
    if constexpr (std::is_same_v<A, double>) {
      write_grad_float64(z, t, y, m, log_s, b, u, g);
    } else {
      write_grad_float(z, t, y, m, log_s, b, u, g);
    }
  }

  // Float math. float32 results: each element in double and rounded once, p_j = exp(z_j - lse) by exp_lanes_double
  // (within 2e-13; lse = m + log_s rounded in double, far below a float ulp). Float arithmetic (exp(z_j - hi) times
  // f = B u exp(-lo), hi the float rounding of lse) erred up to 2 ulps, exp's ulp and two roundings: a weighted float32
  // gradient element of 4.68 (p = 0.87) erred 8.0e-7, 1.27x the accuracy rule's bound, where torch erred 1.5e-7
  // (random [17, 43] rows at the portable level; 1.05x at avx2 on [3, 58]). With p_j this exact, B p_j - q_j of a
  // smoothed or probability target near p_j = 1 needs no expm1 (float64 math's peak below). 16-bit results keep that
  // float arithmetic, whose errors are 2^-16 of their rounding's.
  void write_grad_float(const T* z, const T* t, int64_t y, double m, double log_s, double b, double u, T* g) const {
    const bool hot = !kProb && y >= 0 && y < c;
    const double z_y = hot ? static_cast<double>(z[y]) : 0.0;  // read first: g may be z
    const double lse = m + log_s;
    const A hi = static_cast<A>(lse), ua = static_cast<A>(u);
    const A f = kExactExp ? A(0) : static_cast<A>(b * u * std::exp(static_cast<double>(hi) - lse));
    for (int64_t j = 0; j < c; j += kW) {
      const int64_t count = std::min(kW, c - j);
      const V zv = count == kW ? cpu::load_opmath(z + j) : load_tail(z, j, hi);
      __at_align__ A out[kW];
      if constexpr (kExactExp) {
        __at_align__ double x[kW];
        cpu::vmath::exp_lanes_double(zv, lse, x);
        for (int64_t k = 0; k < kW; ++k) {
          out[k] = static_cast<A>(smooth ? (x[k] * b - (k < count ? q_one(t, j + k) : 0.0)) * u : x[k] * (b * u));
        }
      } else {
        const V p = cpu::vmath::exp(zv - V(hi));
        (smooth ? at::vec::fmsub(p, V(f), q_vec(t, j) * V(ua)) : p * V(f)).store(out);
      }
      if (count == kW) {
        cpu::store_opmath(g + j, V::loadu(out));
      } else {
        store_tail(g, j, V::loadu(out));
      }
    }
    if (hot) write_target_grad(std::expm1((z_y - m) - log_s), t, y, b, u, g);
  }

  // The target class: B p_y - q_y = B (p_y - 1) + (B - q_y), with p_y - 1 = expm1(z_y - lse) exact to an ulp
  // where p_y is near 1. B p_y - q_y from exp cancels there: the ulp of exp's result (1e-16 in float64) became
  // the whole error of a gradient of size 1 - p_y (300 ulps of a 0.02 gradient in torch's CrossEntropyLoss
  // module test). B - q_y is the other classes' mass: exactly 0 without smoothing (B is q_y then). One element
  // per row, so it is computed in double and rounded once: in float, B - q_y from two rounded floats and the
  // two roundings of the fma and the product by u made a smoothed, weighted gradient of 3.13 err by 4.3e-7 where
  // torch's erred by 1.0e-7 (its build at the portable level).
  // p_y_minus_1: expm1(z_y - lse), from the caller (short rows take it for a block of rows at once).
  void write_target_grad(double p_y_minus_1, const T* t, int64_t y, double b, double u, T* g) const {
    const double q_y = (smooth ? q_one(t, y) : 0.0) + one_hot_weight(y);
    g[y] = static_cast<T>(std::fma(p_y_minus_1, b, b - q_y) * u);
  }

  // Float64 math keeps m and log_s apart, since their double sum would round at the scale of m (an lse of 8.5 rounded
  // to 9e-16 made p = 0.99997 3.4 ulps off, where torch's (z - m) - log_s was within 0.1).
  void write_grad_float64(const T* z, const T* t, int64_t y, double m, double log_s, double b, double u, T* g) const {
    const bool hot = !kProb && y >= 0 && y < c;
    const double z_y = hot ? static_cast<double>(z[y]) : 0.0;
    // Where p_j > 1/2 (z_j - m > -log 2 + log_s: the row maximum alone), B p_j - q_j of a smoothed or probability
    // target cancels, and the rounding of p_j near 1 times B became the whole error (in float math, where p_j erred
    // 3e-8: an unbatched float32 gradient with probability targets and class weights erred 7.2e-7, 1.5 ulps of 6.68,
    // where torch's erred 2.3e-7). Such an element is recomputed as B (p_j - 1) + (B - q_j), p_j - 1 = expm1(z_j -
    // lse).
    const double peak_above = -0.6931471805599453 + log_s;  // z_j - m above it
    auto peak = [&](int64_t j, double z_j) {  // z_j: the logit, read before g (maybe z itself) was written
      g[j] = static_cast<T>(std::fma(std::expm1((z_j - m) - log_s), b, b - q_one(t, j)) * u);
    };
    int64_t j = 0;
    for (; j + kW <= c; j += kW) {
      const V zv = cpu::load_opmath(z + j);
      const V d = zv - V(m);
      const V p = (d - V(log_s)).exp();
      const V gj = (smooth ? at::vec::fmsub(p, V(b), q_vec(t, j)) : p * V(b)) * V(u);
      cpu::store_opmath(g + j, gj);
      if (smooth && (d > V(peak_above)).zero_mask() != (1 << kW) - 1) {
        A zs[kW];
        zv.store(zs);
        for (int64_t k = 0; k < kW; ++k) {
          if (zs[k] - m > peak_above) peak(j + k, zs[k]);
        }
      }
    }
    for (; j < c; ++j) {
      const double z_j = static_cast<double>(z[j]);
      if (smooth && z_j - m > peak_above) {
        peak(j, z_j);
      } else {
        const double p = std::exp((z_j - m) - log_s);
        g[j] = static_cast<T>((smooth ? std::fma(p, b, -q_one(t, j)) : p * b) * u);
      }
    }
    if (hot) write_target_grad(std::expm1((z_y - m) - log_s), t, y, b, u, g);
  }

  // Calls row(i, y, terms) for every row i of class y (y < 0: ignored, terms unset), in parallel, the terms taken a
  // block of rows at a time (block_terms), then, where short rows are kept in double (keep_short), block(i0, n, ys,
  // terms, short_block) for each block of rows i0 .. i0 + n - 1.
  template <typename Row, typename Block>
  void for_each_row(const Row& row, bool keep_short, const Block& block) {
    at::parallel_for(0, ce.logits.size(0), grain(), [&](int64_t begin, int64_t end) {
      RowTerms terms[kBlockRows];
      int64_t ys[kBlockRows];
      ShortBlock short_block;
      for (int64_t i0 = begin; i0 < end; i0 += block_rows()) {
        const int64_t n = std::min(block_rows(), end - i0);
        block_terms(i0, n, terms, ys, keep_short ? &short_block : nullptr);
        for (int64_t r = 0; r < n; ++r) row(i0 + r, ys[r], terms[r]);
        if (keep_short) block(i0, n, ys, terms, short_block);
      }
    });
  }
  template <typename Row>
  void for_each_row(const Row& row) {
    for_each_row(row, false, [](int64_t, int64_t, const int64_t*, const RowTerms*, const ShortBlock&) {});
  }

  void forward() {
    double* loss = ce.loss.template data_ptr<double>();
    double* row_weight = ce.row_weight.template data_ptr<double>();
    double* lse = ce.lse.template data_ptr<double>();
    A* mass = ce.target_mass.template data_ptr<A>();
    for_each_row([&](int64_t i, int64_t y, const RowTerms& terms) {
      if (y < 0) {  // ignored rows: no loss, no weight, no gradient
        loss[i] = row_weight[i] = lse[i] = mass[i] = 0;
        return;
      }
      loss[i] = terms.loss();
      row_weight[i] = kProb ? 1.0 : (kWeighted ? weight[y] : 1.0);
      lse[i] = terms.lse();
      mass[i] = static_cast<A>(terms.qsum);
    });
    raise_if_bad_target();
  }

  // The forward scaled by grad_scale (u): loss_i = u * CE_i and its gradient u * d CE_i / d logits_i (grad may be
  // the logits: in place). Ignored rows have loss 0 * u.
  void forward_grad(const at::Tensor& grad_scale, T* grad) {
    double* loss = ce.loss.template data_ptr<double>();
    const double* scale = grad_scale.template const_data_ptr<double>();
    const bool per_row = grad_scale.numel() > 1;
    const bool transposed = short_rows();
    auto row = [&](int64_t i, int64_t y, const RowTerms& terms) {
      T* g = grad + i * c;
      const double u = scale[per_row ? i : 0];
      if (y < 0) {
        loss[i] = 0 * u;  // NaN when u is 1 / 0: 'mean' over only ignored rows, as torch
        std::fill(g, g + c, T(0));
        return;
      }
      loss[i] = u * terms.loss();
      if (!transposed) {
        write_grad(logits + i * c, kProb ? prob + i * c : nullptr, y, terms.m, terms.log_s, terms.qsum, u, g);
      }
    };
    for_each_row(row, transposed, [&](int64_t i0, int64_t n, const int64_t* ys, const RowTerms* terms,
                                      const ShortBlock& blk) {
      double u[kBlockRows];
      for (int64_t r = 0; r < n; ++r) u[r] = scale[per_row ? i0 + r : 0];
      short_rows_grad(i0, n, ys, terms, u, blk, grad);
    });
    raise_if_bad_target();
  }

  void backward(const at::Tensor& grad_rows, at::Tensor& grad_logits) {
    const double* upstream = grad_rows.template const_data_ptr<double>();
    const double* lse = ce.lse.template const_data_ptr<double>();
    const A* mass = ce.target_mass.template const_data_ptr<A>();
    T* grad = grad_logits.template data_ptr<T>();
    at::parallel_for(0, ce.logits.size(0), grain(), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T* g = grad + i * c;
        const int64_t y = target_class(i);
        if (y < 0) {
          std::fill(g, g + c, T(0));
          continue;
        }
        const T* z = logits + i * c;
        const T* t = kProb ? prob + i * c : nullptr;
        if (std::is_same_v<A, double> && class_start == 0 && num_classes == c) {
          // float64 over whole rows recomputes m and log_s (two more reads of the row) rather than take the rounded
          // lse (see write_grad); float64 is the dtype of gradchecks, not of speed. A block of classes cannot.
          const RowTerms r = row_terms(z, t, y);
          write_grad(z, t, y, r.m, r.log_s, mass[i], upstream[i], g);
        } else {
          write_grad(z, t, y - class_start, lse[i], 0.0, mass[i], upstream[i], g);
        }
      }
    });
    raise_if_bad_target();
  }
};

// Calls fn(CrossEntropyRows<T, kProb, kWeighted>&) for the logits' dtype and the target / weight kinds.
template <typename Fn>
void with_cross_entropy_rows(const CrossEntropyTensors& ce, int64_t ignore_index, double eps, Fn&& fn) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ce.logits.scalar_type(), "fastops_cross_entropy", [&] {
    auto run = [&](auto prob, auto weighted) {
      CrossEntropyRows<scalar_t, decltype(prob)::value, decltype(weighted)::value> rows(ce, ignore_index, eps);
      fn(rows);
    };
    const bool weighted = ce.weight.defined();
    if (ce.probability_target()) {
      if (weighted) run(std::true_type{}, std::true_type{});
      else run(std::true_type{}, std::false_type{});
    } else {
      if (weighted) run(std::false_type{}, std::true_type{});
      else run(std::false_type{}, std::false_type{});
    }
  });
}

// ---- elementwise losses ----

// Operands are widened into float (double) buffers of this many elements at a time.
constexpr int64_t kBlock = 256;

template <typename T>
void widen(const T* src, int64_t len, opmath_t<T>* dst) {
  constexpr int64_t kW = Vectorized<opmath_t<T>>::size();
  int64_t k = 0;
  for (; k + kW <= len; k += kW) cpu::load_opmath(src + k).store(dst + k);
  for (; k < len; ++k) dst[k] = static_cast<opmath_t<T>>(src[k]);
}

template <typename T>
void narrow(const opmath_t<T>* src, int64_t len, T* dst) {
  constexpr int64_t kW = Vectorized<opmath_t<T>>::size();
  int64_t k = 0;
  for (; k + kW <= len; k += kW) cpu::store_opmath(dst + k, Vectorized<opmath_t<T>>::loadu(src + k));
  for (; k < len; ++k) dst[k] = static_cast<T>(src[k]);
}

// Sum in double, in 8 independent lanes (which the compiler vectorises without reassociating anything): the
// elementwise values are rounded once each, as torch's, and the sum adds (almost) no error of its own.
// The math type of a reduced elementwise loss: float for 16-bit inputs, double for float32 / float64 (each element
// is then exact to float precision before the sum, which a float32 result of a large sum needs to round right).
template <typename T>
using reduce_math_t = std::conditional_t<cpu::is_reduced_float<T>, float, double>;

template <typename T, typename A>
void widen_to(const T* src, int64_t len, A* dst) {
  if constexpr (std::is_same_v<A, opmath_t<T>>) {
    widen(src, len, dst);
  } else {
    for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<A>(src[k]);
  }
}

template <typename T, typename A>
void narrow_from(const A* src, int64_t len, T* dst) {
  if constexpr (std::is_same_v<A, opmath_t<T>>) {
    narrow(src, len, dst);
  } else {
    for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<T>(static_cast<opmath_t<T>>(src[k]));
  }
}

template <typename A>
double sum_buffer(const A* buf, int64_t len) {
  constexpr int64_t kLanes = 8;
  double lanes[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= len; k += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += static_cast<double>(buf[k + l]);
  }
  for (; k < len; ++k) lanes[0] += static_cast<double>(buf[k]);
  double s = 0;
  for (double v : lanes) s += v;
  return s;
}

// A block of len elements of src in math type A: src itself when it already is (float32 in float math, float64),
// else widened into scratch. Copying float32 operands into float buffers and the result back out (memmove, two
// thirds of the copies of a block) made a float32 mse_loss forward+backward 0.66x torch's at the avx2 level.
template <typename T, typename A>
const A* block_operand(const T* src, int64_t len, A* scratch) {
  if constexpr (std::is_same_v<T, A>) {
    return src;
  } else {
    widen_to(src, len, scratch);
    return scratch;
  }
}

// Where a block's results in math type A go before they are stored to dst: dst itself when T is A, else scratch
// (then narrowed into dst by store_block).
template <typename T, typename A>
A* block_result(T* dst, A* scratch) {
  if constexpr (std::is_same_v<T, A>) {
    return dst;
  } else {
    return scratch;
  }
}

template <typename T, typename A>
void store_block(const A* result, int64_t len, T* dst) {
  if constexpr (!std::is_same_v<T, A>) narrow_from(result, len, dst);
}

// Evaluates, for one block starting at flat index `start`, out[k] = weight * Loss::value or ::grad into `buf`, in
// math type A.
template <typename T, typename Loss, bool kGrad, typename A>
void loss_block(const Loss& loss, const PointwiseTensors& p, int64_t start, int64_t len, A param, A* buf) {
  A x_scratch[kBlock], t_scratch[kBlock], w_scratch[kBlock], pw_scratch[kBlock];
  const A* x = block_operand(p.input.const_data_ptr<T>() + start, len, x_scratch);
  const A* t = block_operand(p.target.const_data_ptr<T>() + start, len, t_scratch);
  // Without pos_weight a block of ones, read like the operand: a constant 1 let the compiler fold and contract
  // binary_cross_entropy_with_logits' formula differently from torch's (float64 at avx2: 3.3e-16 off, bound 2.8e-16).
  const A* pw = pw_scratch;
  if (p.pos_weight.defined()) pw = block_operand(p.pos_weight.const_data_ptr<T>() + start, len, pw_scratch);
  else std::fill(pw_scratch, pw_scratch + len, A(1));
  for (int64_t k = 0; k < len; ++k) {
    buf[k] = kGrad ? loss.grad(x[k], t[k], pw[k], param) : loss.value(x[k], t[k], pw[k], param);
  }
  if (p.weight.defined()) {
    const A* w = block_operand(p.weight.const_data_ptr<T>() + start, len, w_scratch);
    for (int64_t k = 0; k < len; ++k) buf[k] *= w[k];
  }
}

template <typename T, typename Loss>
void pointwise_forward_typed(const Loss& loss, const PointwiseTensors& p, double param, Reduction red,
                             at::Tensor& out) {
  using A = opmath_t<T>;
  const int64_t n = p.input.numel();
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, cpu::kElementwiseGrain / kBlock);
  if (red == Reduction::None) {
    T* y = out.data_ptr<T>();
    at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
      A scratch[kBlock];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t start = b * kBlock, len = std::min(kBlock, n - start);
        A* buf = block_result(y + start, scratch);
        loss_block<T, Loss, false>(loss, p, start, len, static_cast<A>(param), buf);
        store_block(buf, len, y + start);
      }
    });
    return;
  }
  // One partial sum per fixed group of blocks (not per thread: at::parallel_reduce's per-thread partials made the
  // total depend on the thread count), the groups' sums added in order.
  using R = reduce_math_t<T>;
  const int64_t groups = (blocks + grain - 1) / grain;
  std::vector<double> partial(static_cast<size_t>(groups));
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    R buf[kBlock];
    for (int64_t grp = g0; grp < g1; ++grp) {
      double acc = 0;
      for (int64_t b = grp * grain; b < std::min(blocks, (grp + 1) * grain); ++b) {
        const int64_t start = b * kBlock, len = std::min(kBlock, n - start);
        loss_block<T, Loss, false>(loss, p, start, len, static_cast<R>(param), buf);
        acc += sum_buffer(buf, len);
      }
      partial[grp] = acc;
    }
  });
  double total = 0;
  for (const double part : partial) total += part;
  // A plain conversion, not fill_: a sum past the dtype's range is inf, as torch's, where fill_ would refuse the
  // value ("cannot be converted to type float without overflow").
  *out.data_ptr<T>() = static_cast<T>(static_cast<A>(red == Reduction::Mean ? total / static_cast<double>(n) : total));
}

template <typename T, typename Loss>
void pointwise_backward_typed(const Loss& loss, const at::Tensor& grad_output, const PointwiseTensors& p,
                              double param, Reduction red, at::Tensor& grad_input) {
  // The gradient's math type: double for a float32 loss of PreciseGrad (loss_math.h), else the opmath type.
  using A = std::conditional_t<loss::PreciseGrad<Loss>::value && std::is_same_v<T, float>, double, opmath_t<T>>;
  const int64_t n = p.input.numel();
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, cpu::kElementwiseGrain / kBlock);
  const bool per_element = red == Reduction::None;
  // A reduced loss has one upstream gradient, spread over n elements by 'mean'.
  const A upstream = per_element ? A(1)
                                 : static_cast<A>(grad_output.item<double>() /
                                                  (red == Reduction::Mean ? static_cast<double>(n) : 1.0));
  const T* go = per_element ? grad_output.const_data_ptr<T>() : nullptr;
  T* gi = grad_input.data_ptr<T>();
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    A scratch[kBlock], g_scratch[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = b * kBlock, len = std::min(kBlock, n - start);
      A* buf = block_result(gi + start, scratch);
      loss_block<T, Loss, true>(loss, p, start, len, static_cast<A>(param), buf);
      if (per_element) {
        const A* g = block_operand(go + start, len, g_scratch);
        for (int64_t k = 0; k < len; ++k) buf[k] *= g[k];
      } else {
        for (int64_t k = 0; k < len; ++k) buf[k] *= upstream;
      }
      store_block(buf, len, gi + start);
    }
  });
}

// Neumaier's compensated sum: within about an ulp of the exact float64 sum whatever the row count. A plain running
// sum of a float64 'mean' over weighted [N, C, d] rows erred by 6.2e-15 where torch's pairwise sum erred by 9.6e-16.
// Element i goes to lane i % kLanes, and the lanes' sums and compensations are summed the same way at the end: the
// result depends only on n, never on the thread count. One lane was a chain of dependent additions, 5 us of a
// [4096, 10] float32 forward's 58 on two threads (its row losses and row weights).
double compensated_sum(const double* x, int64_t n) {
  constexpr int64_t kLanes = 4;
  auto add = [](double& s, double& c, double v) {
    const double t = s + v;
    c += std::abs(s) >= std::abs(v) ? (s - t) + v : (v - t) + s;
    s = t;
  };
  double s[kLanes] = {}, c[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) add(s[l], c[l], x[i + l]);
  }
  for (int64_t l = 0; i < n; ++i, ++l) add(s[l], c[l], x[i]);
  double total = 0, comp = 0;
  for (int64_t l = 0; l < kLanes; ++l) {
    add(total, comp, s[l]);
    add(total, comp, c[l]);
  }
  return total + comp;
}

// x[r, :] *= scale[r or 0] for rows of row_len elements, skipping factors of exactly 1; parallel over the flat
// elements (one row may be all of x), each task walking the row segments of its range.
template <typename T>
void scale_rows_typed(T* x, int64_t rows, int64_t row_len, const double* scale, bool per_row) {
  using A = opmath_t<T>;
  using V = Vectorized<A>;
  constexpr int64_t kW = V::size();
  at::parallel_for(0, rows * row_len, cpu::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t row = i / row_len;
      const int64_t stop = std::min(end, (row + 1) * row_len);
      const double f = scale[per_row ? row : 0];
      if (f != 1.0) {
        const A fa = static_cast<A>(f);
        int64_t j = i;
        for (; j + kW <= stop; j += kW) cpu::store_opmath(x + j, cpu::load_opmath(x + j) * V(fa));
        for (; j < stop; ++j) x[j] = static_cast<T>(static_cast<A>(x[j]) * fa);
      }
      i = stop;
    }
  });
}

struct CpuBackend {
  static void cross_entropy_forward(const CrossEntropyTensors& ce, int64_t ignore_index, double label_smoothing) {
    with_cross_entropy_rows(ce, ignore_index, label_smoothing, [](auto& rows) { rows.forward(); });
  }

  static void cross_entropy_backward(const CrossEntropyTensors& ce, const at::Tensor& grad_rows,
                                     int64_t ignore_index, double label_smoothing, at::Tensor& grad_logits) {
    with_cross_entropy_rows(ce, ignore_index, label_smoothing,
                            [&](auto& rows) { rows.backward(grad_rows, grad_logits); });
  }

  static void cross_entropy_forward_grad(const CrossEntropyTensors& ce, int64_t ignore_index, double label_smoothing,
                                         const at::Tensor& grad_scale, at::Tensor& grad_logits) {
    with_cross_entropy_rows(ce, ignore_index, label_smoothing, [&](auto& rows) {
      using T = typename std::remove_reference_t<decltype(rows)>::Scalar;
      rows.forward_grad(grad_scale, grad_logits.template data_ptr<T>());
    });
  }

  // cross_entropy_loss's reduction, here rather than in ATen ops: a sum, a division and a dtype conversion as ops
  // cost more than the whole kernel on small inputs (a 'mean' of [2, 8] logits: 3 sums, a division, a conversion).
  static void cross_entropy_reduce(const at::Tensor& rows, const at::Tensor& row_weight, at::Tensor& loss,
                                   at::Tensor& divisor) {
    const double* r = rows.const_data_ptr<double>();
    const int64_t n = rows.numel();
    double total = loss.dim() == 0 ? compensated_sum(r, n) : 0.0, weight_sum = 1;
    if (row_weight.defined()) {
      weight_sum = compensated_sum(row_weight.const_data_ptr<double>(), n);
      total /= weight_sum;
    }
    if (divisor.defined()) *divisor.data_ptr<double>() = weight_sum;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, loss.scalar_type(), "fastops_cross_entropy_reduce", [&] {
      scalar_t* out = loss.data_ptr<scalar_t>();
      if (loss.dim() == 0) {
        *out = static_cast<scalar_t>(total);
      } else {
        for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(r[i]);
      }
    });
  }

  static void cross_entropy_grad_scale(const CrossEntropyTensors& ce, int64_t ignore_index, Reduction red,
                                       at::Tensor& scale) {
    double total = static_cast<double>(ce.logits.size(0));  // probabilities: every row weighs 1
    if (red == Reduction::Sum) {
      total = 1;
    } else if (!ce.probability_target()) {
      // The weight the forward gives each row (w[y], 0 when ignored); an out-of-range class, which the kernel raises
      // for, counts 0.
      const int64_t* y = ce.target.const_data_ptr<int64_t>();
      const int64_t n = ce.target.numel(), c = ce.num_classes;
      total = 0;
      if (ce.weight.defined()) {
        AT_DISPATCH_FLOATING_TYPES(ce.weight.scalar_type(), "fastops_cross_entropy_grad_scale", [&] {
          const scalar_t* w = ce.weight.const_data_ptr<scalar_t>();
          for (int64_t i = 0; i < n; ++i) {
            if (y[i] != ignore_index && y[i] >= 0 && y[i] < c) total += static_cast<double>(w[y[i]]);
          }
        });
      } else {
        int64_t counted = 0;  // an integer count: no chain of dependent float64 additions
        for (int64_t i = 0; i < n; ++i) counted += y[i] != ignore_index && y[i] >= 0 && y[i] < c;
        total = static_cast<double>(counted);
      }
    }
    *scale.data_ptr<double>() = 1.0 / total;
  }

  static void scale_rows(at::Tensor& x, const at::Tensor& scale) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastops_scale_rows", [&] {
      scale_rows_typed(x.data_ptr<scalar_t>(), x.size(0), x.numel() / x.size(0), scale.const_data_ptr<double>(),
                       scale.numel() > 1);
    });
  }

  static void pointwise_forward(PointwiseLoss kind, const PointwiseTensors& p, double param, Reduction red,
                                at::Tensor& out) {
    if (kind == PointwiseLoss::Bce) {
      // torch's CPU binary_cross_entropy refuses probabilities outside [0, 1] (NaN included) with these messages.
      TORCH_CHECK(((p.input >= 0) & (p.input <= 1)).all().item<bool>(),
                  "all elements of input should be between 0 and 1");
      TORCH_CHECK(((p.target >= 0) & (p.target <= 1)).all().item<bool>(),
                  "all elements of target should be between 0 and 1");
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.input.scalar_type(), "fastops_loss_forward", [&] {
      loss::visit_pointwise_loss(kind, [&](auto l) { pointwise_forward_typed<scalar_t>(l, p, param, red, out); });
    });
  }

  static void pointwise_backward(PointwiseLoss kind, const at::Tensor& grad_output, const PointwiseTensors& p,
                                 double param, Reduction red, at::Tensor& grad_input) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.input.scalar_type(), "fastops_loss_backward", [&] {
      loss::visit_pointwise_loss(kind, [&](auto l) {
        pointwise_backward_typed<scalar_t>(l, grad_output, p, param, red, grad_input);
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastops, CPU, m) { register_loss_kernels<CpuBackend>(m); }

}  // namespace fastops
