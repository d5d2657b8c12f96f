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

  // The terms of rows i0 .. i0 + n - 1 into terms[] and their classes into y[] (-1: ignored, terms unset).
  void block_terms(int64_t i0, int64_t n, RowTerms* terms, int64_t* y) {
    __at_align__ double s[kBlockRows];
    A m[kBlockRows];
    std::fill_n(s, kBlockRows, 1.0);  // log 1 for ignored rows and past the block's last
    // One sweep at a time over all rows of the block: a short row's sweep is a chain of dependent steps (load,
    // maximum, horizontal maximum, exponentials, horizontal sum), and rows taken one after the other left the
    // core waiting on each.
    for (int64_t r = 0; r < n; ++r) {
      y[r] = target_class(i0 + r);
      if (y[r] >= 0) m[r] = row_max(logits + (i0 + r) * c);
    }
    for (int64_t r = 0; r < n; ++r) {
      if (y[r] < 0) continue;
      terms[r] = row_sums(logits + (i0 + r) * c, kProb ? prob + (i0 + r) * c : nullptr, y[r], m[r]);
      s[r] = terms[r].log_s;
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
    for (; j + kW <= c; j += kW) vmax = at::vec::maximum(vmax, cpu::load_opmath(z + j));
    if (j < c) vmax = at::vec::maximum(vmax, load_tail(z, j, -std::numeric_limits<A>::infinity()));
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
  // sum). Float math takes lse = hi + lo, hi its float rounding, and B p_j u = exp(z_j - hi) f with the row factor
  // f = B u exp(-lo) in double and rounded once (z_j - hi is exact near the maximum): two roundings fewer per element
  // than exp((z_j - hi) - lo) times B times u, which erred 1.1 ulps per element and made a weighted float32 weight
  // gradient (8 tokens x 5 features x 4 classes, torch's module data) err 1.03e-6, 1.9x torch's reference path
  // (5.5e-7) and 4.6x its chunked path (2.2e-7); now 5.5e-7. Double math keeps hi = m and lo = log_s apart, since
  // their double sum would round at the scale of m (an lse of 8.5 rounded to 9e-16 made p = 0.99997 3.4 ulps off,
  // where torch's (z - m) - log_s was within 0.1).
  void write_grad(const T* z, const T* t, int64_t y, double m, double log_s, double b, double u, T* g) const {
    constexpr bool kDouble = std::is_same_v<A, double>;
    const double lse = m + log_s;
    const A hi = kDouble ? static_cast<A>(m) : static_cast<A>(lse);
    const double lo = kDouble ? log_s : lse - static_cast<double>(hi);
    const A f = static_cast<A>(kDouble ? b : b * u * std::exp(-lo));
    const A ua = static_cast<A>(u), ba = static_cast<A>(b), lo_a = static_cast<A>(lo);
    const bool hot = !kProb && y >= 0 && y < c;
    const double z_y = hot ? static_cast<double>(z[y]) : 0.0;
    // Where p_j > 1/2 (z_j - hi > -log 2: the row maximum alone), B p_j - q_j of a smoothed or probability target
    // cancels, and the rounding of p_j near 1 (3e-8) times B became the whole error: an unbatched float32 gradient
    // with probability targets and class weights erred 7.2e-7 (1.5 ulps of 6.68) where torch's erred 2.3e-7. Such an
    // element is recomputed as B (p_j - 1) + (B - q_j), p_j - 1 = expm1(z_j - lse), in double and rounded once.
    const A peak_above = static_cast<A>(-0.6931471805599453) + (kDouble ? lo_a : A(0));  // z_j - hi above it
    auto peak = [&](int64_t j, A z_j) {  // z_j: the logit, read before g (maybe z itself) was written
      g[j] = static_cast<T>(std::fma(std::expm1((static_cast<double>(z_j) - m) - log_s), b, b - q_one(t, j)) * u);
    };
    int64_t j = 0;
    for (; j + kW <= c; j += kW) {
      const V zv = cpu::load_opmath(z + j);
      const V d = zv - V(hi);
      V gj;
      if constexpr (kDouble) {
        const V p = (d - V(lo_a)).exp();
        gj = (smooth ? at::vec::fmsub(p, V(ba), q_vec(t, j)) : p * V(ba)) * V(ua);
      } else {
        gj = smooth ? at::vec::fmsub(d.exp(), V(f), q_vec(t, j) * V(ua)) : d.exp() * V(f);
      }
      if (smooth && (d > V(peak_above)).zero_mask() != (1 << kW) - 1) {
        A zs[kW];
        zv.store(zs);
        cpu::store_opmath(g + j, gj);
        for (int64_t k = 0; k < kW; ++k) {
          if (zs[k] - hi > peak_above) peak(j + k, zs[k]);
        }
      } else {
        cpu::store_opmath(g + j, gj);
      }
    }
    if (kVectorTail && j < c) {
      // The scalar loop's arithmetic below, lane by lane: exp of the float d rounded once, q_j in double rounded once,
      // one float FMA. Padded with d = 0.
      const int64_t count = c - j;
      __at_align__ A zs[kW], q[kW] = {};
      const V zv = load_tail(z, j, hi);
      zv.store(zs);  // read before g (maybe z) is written
      const V d = zv - V(hi);
      __at_align__ double wide[kW];
      to_double(d, wide);
      exp_lanes(wide, count);
      __at_align__ A p[kW];
      for (int64_t k = 0; k < kW; ++k) p[k] = static_cast<A>(wide[k]);
      V gj = V::loadu(p) * V(f);
      if (smooth) {
        for (int64_t k = 0; k < count; ++k) q[k] = static_cast<A>(-q_one(t, j + k)) * ua;
        gj = at::vec::fmadd(V::loadu(p), V(f), V::loadu(q));
      }
      store_tail(g, j, gj);
      for (int64_t k = 0; smooth && k < count; ++k) {
        if (zs[k] - hi > peak_above) peak(j + k, zs[k]);
      }
      j = c;
    }
    for (; j < c; ++j) {
      const A d = static_cast<A>(z[j]) - hi;
      if (smooth && d > peak_above) {
        peak(j, static_cast<A>(z[j]));
      } else if constexpr (kDouble) {
        const A p = std::exp(d - lo_a);
        g[j] = static_cast<T>((smooth ? std::fma(p, ba, static_cast<A>(-q_one(t, j))) : p * ba) * ua);
      } else {
        g[j] = static_cast<T>(smooth ? std::fma(std::exp(d), f, static_cast<A>(-q_one(t, j)) * ua)
                                     : std::exp(d) * f);
      }
    }
    if (hot) {
      // The target class: B p_y - q_y = B (p_y - 1) + (B - q_y), with p_y - 1 = expm1(z_y - lse) exact to an ulp
      // where p_y is near 1. B p_y - q_y from exp cancels there: the ulp of exp's result (1e-16 in float64) became
      // the whole error of a gradient of size 1 - p_y (300 ulps of a 0.02 gradient in torch's CrossEntropyLoss
      // module test). B - q_y is the other classes' mass: exactly 0 without smoothing (B is q_y then). One element
      // per row, so it is computed in double and rounded once: in float, B - q_y from two rounded floats and the
      // two roundings of the fma and the product by u made a smoothed, weighted gradient of 3.13 err by 4.3e-7 where
      // torch's erred by 1.0e-7 (its build at the portable level).
      const double q_y = (smooth ? q_one(t, y) : 0.0) + one_hot_weight(y);
      g[y] = static_cast<T>(std::fma(std::expm1((z_y - m) - log_s), b, b - q_y) * u);
    }
  }

  // Calls row(i, y, terms) for every row i of class y (y < 0: ignored, terms unset), in parallel, the terms taken a
  // block of rows at a time (block_terms).
  template <typename Row>
  void for_each_row(const Row& row) {
    at::parallel_for(0, ce.logits.size(0), grain(), [&](int64_t begin, int64_t end) {
      RowTerms terms[kBlockRows];
      int64_t ys[kBlockRows];
      for (int64_t i0 = begin; i0 < end; i0 += block_rows()) {
        const int64_t n = std::min(block_rows(), end - i0);
        block_terms(i0, n, terms, ys);
        for (int64_t r = 0; r < n; ++r) row(i0 + r, ys[r], terms[r]);
      }
    });
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
    for_each_row([&](int64_t i, int64_t y, const RowTerms& terms) {
      const T* z = logits + i * c;
      const T* t = kProb ? prob + i * c : nullptr;
      T* g = grad + i * c;
      const double u = scale[per_row ? i : 0];
      if (y < 0) {
        loss[i] = 0 * u;  // NaN when u is 1 / 0: 'mean' over only ignored rows, as torch
        std::fill(g, g + c, T(0));
        return;
      }
      loss[i] = u * terms.loss();
      write_grad(z, t, y, terms.m, terms.log_s, terms.qsum, u, g);
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

// Neumaier's compensated sum, in order: within about an ulp of the exact float64 sum whatever the row count. A plain
// running sum of a float64 'mean' over weighted [N, C, d] rows erred by 6.2e-15 where torch's pairwise sum erred by
// 9.6e-16.
double compensated_sum(const double* x, int64_t n) {
  double s = 0, c = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double t = s + x[i];
    c += std::abs(s) >= std::abs(x[i]) ? (s - t) + x[i] : (x[i] - t) + s;
    s = t;
  }
  return s + c;
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
        for (int64_t i = 0; i < n; ++i) total += (y[i] != ignore_index && y[i] >= 0 && y[i] < c) ? 1.0 : 0.0;
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
