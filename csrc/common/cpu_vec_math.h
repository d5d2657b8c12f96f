// Inline float32 vector math for the CPU kernels (AVX2 and AVX-512 builds), used instead of at::vec's Sleef-based
// functions.
//
// Why: Vectorized<float>::exp() and erf() call Sleef_expf8_u10 / Sleef_expf16_u10 out of line. Every ymm/zmm register
// is caller-saved in the x86-64 ABI, so a kernel that keeps two vectors in flight spills them all around each call;
// perf showed the gelu kernel's hot loop dominated by those stack reloads. These versions are forced inline into the
// caller (C10_ALWAYS_INLINE: see activations_cpu.cpp for what GCC did otherwise) and keep everything in registers.
// AVX-512, single thread, 2^20 float32 elements (torch.utils.benchmark, min of 5 medians): gelu 634 -> 443 us, silu
// 470 -> 378 us, tanh 1500 -> 435..580 us (noisy machine); torch: 345, 416, 375 us.
//
// One implementation serves both levels: it is written on Vectorized<float> (whose operators are single AVX2 or
// AVX-512 instructions, FMA included) and differs per level only in how 2^n is applied (pow2_scale). The two levels
// give bitwise the same results. float64 keeps at::vec's (Sleef) functions: the double kernels are not the CPU target
// and their accuracy rule is one double ulp. At the portable level (no FMA) tanh evaluates the same polynomials per
// lane in double, erf and expm1 their own in double; exp is an SSE2 version of the float one (std::exp per lane on
// non-x86 portable builds).
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <c10/macros/Macros.h>
#include <c10/util/bit_cast.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fastops::cpu::vmath {

using at::vec::Vectorized;

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)

using VF = Vectorized<float>;

// p * 2^n for integral n in [-150, 128] (float lanes), rounded once: the zeros, denormals and infinities of the
// result come out right. AVX-512 has it as one instruction. AVX2 builds 2^n from two halves, n = n1 + n2 with
// |n1|, |n2| <= 75 so that both 2^n1 and 2^n2 are normal floats: p * 2^n1 is exact (p is within [0.7, 1.5)), and the
// second product is the single rounding, as in vscalefps.
C10_ALWAYS_INLINE VF pow2_scale(const VF& p, const VF& n) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_scalef_ps(p, n);
#else
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
#endif
}

// exp(x) for float32, within about 1 ulp (the polynomial's own error is 3.8e-9 relative, below float's half ulp),
// with IEEE behaviour at the edges: +inf above ln(FLT_MAX), 0 below the smallest denormal, gradual underflow in
// between, NaN propagated.
//
// x = n*ln2 + r with |r| <= ln2/2 (Cody-Waite: n*ln2 subtracted in two FMAs so r is exact), exp(r) = 1 + r + r^2*P(r)
// with P a degree-4 near-minimax fit of (exp(r)-1-r)/r^2 (Chebyshev-node least squares weighted for relative
// error), and 2^n applied by pow2_scale. The reduction and P are shared with expm1 (ExpReduced: n, r, P(r)).
struct ExpReduced {
  VF n, r, p;
};

C10_ALWAYS_INLINE ExpReduced exp_reduce(VF x) {
  // Clamping keeps r meaningful for huge |x| (the answer there is 0 or inf anyway). The underlying max/min return
  // their second operand when either is NaN, and clamp passes x second, so a NaN x passes through.
  x = at::vec::clamp(x, VF(-104.0f), VF(89.0f));
  const VF n = (x * VF(1.44269502e+00f)).round();
  VF r = at::vec::fnmadd(n, VF(6.93147182e-01f), x);   // float(ln 2)
  r = at::vec::fnmadd(n, VF(-1.90465432e-09f), r);     // ln 2 - float(ln 2)
  VF p = at::vec::fmadd(VF(1.37514074e-03f), r, VF(8.36891588e-03f));
  p = at::vec::fmadd(p, r, VF(4.16695327e-02f));
  p = at::vec::fmadd(p, r, VF(1.66665182e-01f));
  p = at::vec::fmadd(p, r, VF(4.99999881e-01f));
  return {n, r, p};
}

C10_ALWAYS_INLINE VF exp(const VF& x) {
  const ExpReduced e = exp_reduce(x);
  return pow2_scale(at::vec::fmadd(e.p * e.r, e.r, e.r + VF(1.0f)), e.n);
}

// expm1(x) for float32 (torch's elu family uses expm1), from exp's pieces: x = n*ln2 + r, expm1(r) = r + r^2*P(r)
// without exp's leading 1, so small |x| keeps all its digits. Then expm1(x) = 2^n*expm1(r) + (2^n - 1), one FMA:
// 2^n - 1 is exact for |n| <= 24. Beyond, the answer is dominated by 2^n*exp(r) or by -1, and exp(x) - 1 loses
// nothing: NaN, infinities, -1 below about -17 and overflow come out of that branch.
C10_ALWAYS_INLINE VF expm1(const VF& x) {
  const VF one(1.0f);
  const ExpReduced e = exp_reduce(x);
  const VF expm1_r = at::vec::fmadd(e.p * e.r, e.r, e.r);
  const VF two_n = pow2_scale(one, e.n);
  const VF near = at::vec::fmadd(two_n, expm1_r, two_n - one);
  const VF far = pow2_scale(expm1_r + one, e.n) - one;
  return VF::blendv(far, near, e.n.abs() <= VF(24.0f)) | (x & VF(-0.0f));  // x's sign: expm1(-0) = -0
}

// erf(x) for float32 with torch's own formula (Abramowitz & Stegun 7.1.26, as Vectorized<float>::erf and oneDNN's
// gelu_erf use), so the error stays torch's (at most 1.5e-7 absolute): sign(x) * (1 - t*P(t)*e), e = exp(-x^2),
// t = 1 / (1 + 0.3275911*|x|). Only the exp differs (the inline one above instead of Sleef's). A caller that already
// has e (gelu's backward: it is the normal pdf's exponential too) passes it and saves one exp.
C10_ALWAYS_INLINE VF erf(const VF& x, const VF& e) {
  const VF one(1.0f);
  const VF sign(-0.0f);
  const VF t = one / at::vec::fmadd(VF(0.3275911f), x.abs(), one);
  VF poly = at::vec::fmadd(VF(1.061405429f), t, VF(-1.453152027f));
  poly = at::vec::fmadd(poly, t, VF(1.421413741f));
  poly = at::vec::fmadd(poly, t, VF(-0.284496736f));
  poly = at::vec::fmadd(poly, t, VF(0.254829592f));
  const VF magnitude = at::vec::fnmadd(e * t, poly, one);
  return magnitude | (x & sign);  // copysign(magnitude, x)
}

C10_ALWAYS_INLINE VF erf(const VF& x) { return erf(x, exp(at::vec::fnmadd(x, x, VF(0.0f)))); }

// tanh(x) for float32, within about 1 ulp. Near zero an odd polynomial, x + x^3*P(x^2) for |x| < 0.85 (P of degree
// 6, a near-minimax fit of (tanh(x)-x)/x^3 weighted for relative error: 3.5e-9 with float coefficients); elsewhere
// 1 - 2e/(1+e) with e = exp(-2|x|) <= 0.19, free of cancellation, with x's sign put back. Both are computed and
// blended, which is still well under the work of Sleef_tanhf16_u10 (what Vectorized<float>::tanh calls out of line).
// The split point trades polynomial degree against the quotient's rounding: at 0.55 (degree 4) the worst error was
// 1.4 ulp just above the split, at 0.85 it is 0.9 ulp.
C10_ALWAYS_INLINE VF tanh(const VF& x) {
  const VF one(1.0f);
  const VF sign(-0.0f);
  const VF ax = x.abs();
  const VF x2 = x * x;
  VF p = at::vec::fmadd(VF(-5.123661831e-04f), x2, VF(2.723197220e-03f));
  p = at::vec::fmadd(p, x2, VF(-8.399761282e-03f));
  p = at::vec::fmadd(p, x2, VF(2.172728814e-02f));
  p = at::vec::fmadd(p, x2, VF(-5.394442752e-02f));
  p = at::vec::fmadd(p, x2, VF(1.333314329e-01f));
  p = at::vec::fmadd(p, x2, VF(-3.333332837e-01f));
  const VF small = at::vec::fmadd(p * x2, x, x);
  const VF e = exp(ax * VF(-2.0f));
  // 1 - 2e/(1+e) with a single final rounding: d = 1 + e is rounded, but its rounding error d_err is exact (Fast2Sum,
  // 1 >= e), and one Newton step against the exact 1 + e = d + d_err turns 1/d into 1/(1+e) to ~2^-46; the result
  // is then one fnmadd. The straightforward 1 - (e+e)/(1+e) rounds three times and measured 0.85 ulp worst case,
  // which bias_act's tanh backward (1 - t^2 from a recomputed t) magnified past the accuracy rule.
  const VF d = one + e;
  const VF d_err = e - (d - one);
  const VF r0 = one / d;
  const VF residual = at::vec::fnmadd(d_err, r0, at::vec::fnmadd(d, r0, one));  // 1 - (1+e)*r0
  const VF r = at::vec::fmadd(r0, residual, r0);
  const VF large = at::vec::fnmadd(e + e, r, one);
  // NaN compares false, so a NaN takes the `large` branch, which is NaN too. `small` already carries x's sign;
  // OR-ing it in afterwards gives `large` its sign and keeps tanh(-0) = -0.
  const VF magnitude = VF::blendv(large, small, ax < VF(0.85f));
  return magnitude | (x & sign);
}

using VD = Vectorized<double>;

// p * 2^n for integral n in [-1022, 1023] (double lanes). AVX2 writes n + 1023 into the exponent field: n + 1.5 * 2^52
// holds n in its low mantissa bits, and the shift drops everything above them.
C10_ALWAYS_INLINE VD pow2_scale(const VD& p, const VD& n) {
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_scalef_pd(p, n);
#else
  const __m256i low = _mm256_castpd_si256(_mm256_add_pd(n, _mm256_set1_pd(6755399441055744.0)));
  const __m256i two_n = _mm256_slli_epi64(_mm256_add_epi64(low, _mm256_set1_epi64x(1023)), 52);
  return _mm256_mul_pd(p, _mm256_castsi256_pd(two_n));
#endif
}

// exp(x) in double within about 2e-13 relative, inline: for float math that wants the exponential of a double (or
// float) argument rounded once to float, as std::exp's float result is (ties closer than 2e-13 aside), or summed in
// double. Sleef's out-of-line u10 function (what Vectorized<double>::exp calls) cost more than the rest of a short
// cross-entropy row. x = n*ln2 + r (Cody-Waite, two FMAs), exp(r) by its Taylor polynomial of degree 10 (|r| <=
// ln2/2: the first term left out is 2.2e-13 of the sum). x is clamped to [-708, 709], where 2^n is a normal double:
// below, the result is about 1e-308 instead of 0, which no float rounding or float-sized sum sees; a NaN passes.
C10_ALWAYS_INLINE VD exp_to_float(VD x) {
  x = at::vec::clamp(x, VD(-708.0), VD(709.0));
  const VD n = (x * VD(1.4426950408889634)).round();
  VD r = at::vec::fnmadd(n, VD(0.6931471805599453), x);  // double(ln 2)
  r = at::vec::fnmadd(n, VD(2.3190468138462996e-17), r);  // ln 2 - double(ln 2)
  // 1/10!, 1/9!, ..., 1/2!, 1, 1.
  constexpr double kInverseFactorials[] = {2.755731922398589e-07, 2.7557319223985893e-06, 2.48015873015873e-05,
                                           1.984126984126984e-04, 1.388888888888889e-03, 8.333333333333333e-03,
                                           4.1666666666666664e-02, 1.6666666666666666e-01, 0.5, 1.0, 1.0};
  VD p(kInverseFactorials[0]);
  for (size_t i = 1; i < std::size(kInverseFactorials); ++i) p = at::vec::fmadd(p, r, VD(kInverseFactorials[i]));
  return pow2_scale(p, n);
}

#else  // the portable level

// The portable x86-64 level has SSE2: no FMA and no vector 2^n. There Vectorized<float>::tanh is a loop over std::tanh,
// which made float32 tanh 5.8x slower than torch's (MKL's vector math at SSE4.2; 2^22 elements: 38.3 vs 6.6 ms). Here
// each lane is evaluated in double by branch-free code the compiler vectorizes (SSE2 has double arithmetic,
// float<->double conversion and 64-bit integer adds and shifts; see -fno-trapping-math in setup.py) and rounded to
// float once: the float inputs' products are exact in double, so the vector version's polynomials need no FMA, and
// the result is within about half an ulp plus the polynomials' own error (below 4e-9 relative). Now 11.6 ms.
namespace portable {

constexpr double kShifter = 0x1.8p52;  // x + kShifter - kShifter rounds x to an integer (|x| < 2^51)

// exp(x) = 2^n * (1 + expm1(r)) in double, x = n*ln2 + r, for x clamped to float's range [-104, 89] (the
// exponential of exp and expm1 below).
struct ExpParts {
  double scale;     // 2^n
  double expm1_r;   // expm1(r), |r| <= ln2/2, within 4e-9 relative (the vector version's polynomial)
};

inline ExpParts exp_parts(double x) {
  x = std::min(std::max(x, -104.0), 89.0);  // NaN passes (std::max/min return their first operand then)
  const double t = x * 1.4426950408889634 + kShifter;  // n = round(x / ln 2) sits in t's low mantissa bits
  const double n = t - kShifter;
  const double r = x - n * 0.6931471805599453;  // its error far below float's
  double p = 1.37514074e-03 * r + 8.36891588e-03;
  p = p * r + 4.16695327e-02;
  p = p * r + 1.66665182e-01;
  p = p * r + 4.99999881e-01;
  // 2^n from t's bits: n + 1023 in the exponent field (n in [-151, 129], a normal double).
  const uint64_t scale = (c10::bit_cast<uint64_t>(t) - c10::bit_cast<uint64_t>(kShifter) + 1023) << 52;
  return {c10::bit_cast<double>(scale), p * r * r + r};
}

// tanh's e = exp(-2|x|).
inline double exp(double x) {
  const ExpParts e = exp_parts(x);
  return e.scale * (e.expm1_r + 1.0);
}

// expm1(x) as the vector version builds it, 2^n * expm1(r) + (2^n - 1) (both terms exact in double), so small |x|
// keeps its digits; x's sign put back makes expm1(-0) = -0.
inline double expm1(double x) {
  const ExpParts e = exp_parts(x);
  return std::copysign(e.scale * e.expm1_r + (e.scale - 1.0), x);
}

// The vector version's split (|x| < 0.85: x + x^3 P(x^2); else 1 - 2e/(1+e), e = exp(-2|x|)); double needs no
// compensation in the quotient. A NaN takes the second branch, which is NaN.
inline double tanh(double x) {
  const double ax = std::fabs(x);
  const double x2 = x * x;
  double p = -5.123661831e-04 * x2 + 2.723197220e-03;
  p = p * x2 - 8.399761282e-03;
  p = p * x2 + 2.172728814e-02;
  p = p * x2 - 5.394442752e-02;
  p = p * x2 + 1.333314329e-01;
  p = p * x2 - 3.333332837e-01;
  const double small = p * x2 * x + x;
  const double e = exp(-2.0 * ax);
  const double large = 1.0 - 2.0 * e / (1.0 + e);
  return ax < 0.85 ? small : std::copysign(large, x);
}

// erf in double, for float inputs (x + x*A(x^2) below 1, 1 - B(|x| - 2.5) up to 4, where erf rounds to 1 in float):
// least-squares polynomials at Chebyshev nodes, printed by scripts/fit_portable_erf.py (its docstring has the method).
// Rounded to float, every float in [0, 4.5] comes out within 0.51 ulp of erf. A NaN takes the second branch: NaN.
constexpr double kErfSmall[] = {0.12837916708228556, -0.37612638590433278, 0.1128378411186874, -0.026865517446023935,
                                0.0052212614999454015, -0.00084872677938173358, 0.0001128817522497799,
                                -9.7284097832985778e-06};
constexpr double kErfcLarge[] = {0.00040695214177236748, -0.0021782785040530533, 0.0054457015064667486,
                                 -0.0083502117743445119, 0.0086224843267866703, -0.0061165875598249899,
                                 0.0027979812514598136, -0.0005445338303076315, -0.00025947491029375898,
                                 0.00025342417790514139, -8.0394298819095339e-05, -7.756445348741788e-06,
                                 1.5348351088599392e-05, -3.4626537157137585e-06, -7.886890126423446e-07,
                                 3.5129914353911942e-07, -1.1272014878229776e-08};

template <size_t N>
inline double horner(const double (&coef)[N], double t) {
  double p = coef[N - 1];
  for (size_t i = N - 1; i-- > 0;) p = p * t + coef[i];
  return p;
}

inline double erf(double x) {
  const double ax = std::fabs(x);
  const double small = x + x * horner(kErfSmall, x * x);
  const double large = std::copysign(1.0 - horner(kErfcLarge, std::min(ax, 4.0) - 2.5), x);
  return ax < 1.0 ? small : large;
}

#if defined(__SSE2__)
// exp(x) for four float lanes in SSE2 (every x86-64 CPU has it): x = n ln2 + r with ln2 split Cody-Waite style into
// 0.693359375 (9 bits, so n times it is exact and so is x minus that) and the rest, exp(r) = 1 + r + r^2 P(r) with
// the AVX levels' P, and 2^n applied in two halves as there (the zeros, denormals and infinities of the result come
// out right). Within 1 ulp; no FMA. Intrinsics, not a lane loop left to the compiler: GCC vectorized that in silu's
// loop but not in the gated units' or cross entropy's (float32 swiglu forward 10.0 -> 15.4 ms instead of faster).
C10_ALWAYS_INLINE __m128 exp_sse2(__m128 x) {
  const __m128 shifter = _mm_set1_ps(12582912.0f);  // 1.5 * 2^23: x + shifter - shifter rounds x to an integer
  // max/min return their second operand when either is NaN: x second, so a NaN passes.
  x = _mm_min_ps(_mm_set1_ps(89.0f), _mm_max_ps(_mm_set1_ps(-104.0f), x));
  const __m128 t = _mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(1.44269502e+00f)), shifter);  // n in t's low mantissa bits
  const __m128 n = _mm_sub_ps(t, shifter);
  const __m128 r = _mm_add_ps(_mm_sub_ps(x, _mm_mul_ps(n, _mm_set1_ps(0.693359375f))),
                              _mm_mul_ps(n, _mm_set1_ps(2.12194440e-04f)));
  __m128 p = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(1.37514074e-03f), r), _mm_set1_ps(8.36891588e-03f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(4.16695327e-02f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.66665182e-01f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(4.99999881e-01f));
  const __m128 q = _mm_add_ps(_mm_add_ps(_mm_mul_ps(_mm_mul_ps(p, r), r), r), _mm_set1_ps(1.0f));
  const __m128i ni = _mm_sub_epi32(_mm_castps_si128(t), _mm_castps_si128(shifter));  // n in [-150, 128]
  const __m128i n1 = _mm_srai_epi32(ni, 1);
  const __m128i n2 = _mm_sub_epi32(ni, n1);
  const __m128i bias = _mm_set1_epi32(127);
  const __m128 s1 = _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(n1, bias), 23));
  const __m128 s2 = _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(n2, bias), 23));
  return _mm_mul_ps(_mm_mul_ps(q, s1), s2);
}
#endif

// f applied to each lane (in double), rounded to float once.
template <typename F>
C10_ALWAYS_INLINE Vectorized<float> map(const Vectorized<float>& x, F f) {
  constexpr int kSize = Vectorized<float>::size();
  __at_align__ float in[kSize];
  __at_align__ float out[kSize];
  x.store(in);
  for (int i = 0; i < kSize; ++i) out[i] = static_cast<float>(f(static_cast<double>(in[i])));
  return Vectorized<float>::loadu(out);
}

}  // namespace portable

#if defined(__SSE2__)
// exp four lanes at a time (portable::exp_sse2): glibc's expf, a call per lane with spills around each call, made
// float32 silu's forward 0.76x torch's and its backward 0.70x (2^24 elements, 2 threads; torch's kernels call expf
// too, with less around them); exp in double lanes (portable::exp) was slower than expf.
inline Vectorized<float> exp(const Vectorized<float>& x) {
  constexpr int kSize = Vectorized<float>::size();
  static_assert(kSize % 4 == 0);
  __at_align__ float lanes[kSize];
  x.store(lanes);
  for (int i = 0; i < kSize; i += 4) _mm_store_ps(lanes + i, portable::exp_sse2(_mm_load_ps(lanes + i)));
  return Vectorized<float>::loadu(lanes);
}
#else
inline Vectorized<float> exp(const Vectorized<float>& x) { return x.exp(); }  // std::exp per lane
#endif
inline Vectorized<float> tanh(const Vectorized<float>& x) {
  return portable::map(x, [](double v) { return portable::tanh(v); });
}
// expm1 per lane in double (portable::expm1): std::expm1 per lane made elu's forward 3.6x slower than with
// exp(x) - 1 (2^24 float32 elements: 198 vs 55 ms).
inline Vectorized<float> expm1(const Vectorized<float>& x) {
  return portable::map(x, [](double v) { return portable::expm1(v); });
}
// erf per lane in double (portable::erf): as exact as std::erf, which torch's kernels use at this level (their A&S
// formula, 1.5e-7 absolute error, is only in their AVX2/AVX-512 code and made a float32 gelu gradient err 3.3e-7
// where torch's erred 9.7e-8), and vectorized where std::erf is a call per lane.
inline Vectorized<float> erf(const Vectorized<float>& x) {
  return portable::map(x, [](double v) { return portable::erf(v); });
}
inline Vectorized<float> erf(const Vectorized<float>& x, const Vectorized<float>&) { return erf(x); }

// At the portable level at::vec's double exp is std::exp per lane.
inline Vectorized<double> exp_to_float(const Vectorized<double>& x) { return x.exp(); }

#endif

inline Vectorized<double> exp(const Vectorized<double>& x) { return x.exp(); }
inline Vectorized<double> expm1(const Vectorized<double>& x) { return x.expm1(); }
inline Vectorized<double> erf(const Vectorized<double>& x) { return x.erf(); }
inline Vectorized<double> erf(const Vectorized<double>& x, const Vectorized<double>&) { return x.erf(); }
inline Vectorized<double> tanh(const Vectorized<double>& x) { return x.tanh(); }

}  // namespace fastops::cpu::vmath
