// Inline float32 vector math for the CPU kernels (AVX-512 builds), used instead of at::vec's Sleef-based functions.
//
// Why: Vectorized<float>::exp() and erf() call Sleef_expf16_u10 out of line. Every zmm register is caller-saved in
// the x86-64 ABI, so a kernel that keeps two vectors in flight spills them all around each call; perf showed the
// gelu kernel's hot loop dominated by those stack reloads. These versions inline into the caller and keep everything
// in registers. Single thread, 2^20 float32 elements (torch.utils.benchmark, min of 5 medians): gelu 634 -> 443 us,
// silu 470 -> 378 us, tanh 1500 -> 435..580 us (noisy machine); torch: 345, 416, 375 us. float64 keeps at::vec's (Sleef) functions: the double kernels are not the CPU target and their
// accuracy rule is one double ulp.
#pragma once

#include <ATen/cpu/vec/vec.h>

namespace fastops::cpu::vmath {

using at::vec::Vectorized;

#if defined(CPU_CAPABILITY_AVX512)

// exp(x) for float32, within about 1 ulp (the polynomial's own error is 3.8e-9 relative, below float's half ulp),
// with IEEE behaviour at the edges: +inf above ln(FLT_MAX), 0 below the smallest denormal, gradual underflow in
// between, NaN propagated.
//
// x = n*ln2 + r with |r| <= ln2/2 (Cody-Waite: n*ln2 subtracted in two FMAs so r is exact), exp(r) = 1 + r + r^2*P(r)
// with P a degree-4 near-minimax fit of (exp(r)-1-r)/r^2 (Chebyshev-node least squares weighted for relative
// error), and 2^n applied by vscalefps, which also produces the denormals, the zeros and the infinities.
inline __m512 exp_avx512(__m512 x) {
  // Clamping keeps r meaningful for huge |x| (the answer there is 0 or inf anyway). max/min return their second
  // operand when either is NaN, so a NaN x passes through.
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269502e+00f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(6.93147182e-01f), x);  // float(ln 2)
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-1.90465432e-09f), r);        // ln 2 - float(ln 2)
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.37514074e-03f), r, _mm512_set1_ps(8.36891588e-03f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.16695327e-02f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.66665182e-01f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.99999881e-01f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// erf(x) for float32 with torch's own formula (Abramowitz & Stegun 7.1.26, as Vectorized<float>::erf and oneDNN's
// gelu_erf use), so the error stays torch's (at most 1.5e-7 absolute): sign(x) * (1 - t*P(t)*exp(-x^2)),
// t = 1 / (1 + 0.3275911*|x|). Only the exp differs (the inline one above instead of Sleef's).
inline __m512 erf_avx512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  const __m512 ax = _mm512_andnot_ps(sign, x);
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), ax, one));
  __m512 poly = _mm512_fmadd_ps(_mm512_set1_ps(1.061405429f), t, _mm512_set1_ps(-1.453152027f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421413741f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284496736f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254829592f));
  const __m512 e = exp_avx512(_mm512_fnmadd_ps(x, x, _mm512_setzero_ps()));  // exp(-x^2)
  const __m512 magnitude = _mm512_fnmadd_ps(_mm512_mul_ps(e, t), poly, one);
  return _mm512_or_ps(magnitude, _mm512_and_ps(x, sign));  // copysign(magnitude, x)
}

// tanh(x) for float32, within about 1 ulp. Near zero an odd polynomial, x + x^3*P(x^2) for |x| < 0.85 (P of degree
// 6, a near-minimax fit of (tanh(x)-x)/x^3 weighted for relative error: 3.5e-9 with float coefficients); elsewhere
// 1 - 2e/(1+e) with e = exp(-2|x|) <= 0.19, free of cancellation, with x's sign put back. Both are computed and
// blended, which is still well under the work of Sleef_tanhf16_u10 (what Vectorized<float>::tanh calls out of line).
// The split point trades polynomial degree against the quotient's rounding: at 0.55 (degree 4) the worst error was
// 1.4 ulp just above the split, at 0.85 it is 0.9 ulp.
inline __m512 tanh_avx512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  const __m512 ax = _mm512_andnot_ps(sign, x);
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(-5.123661831e-04f), x2, _mm512_set1_ps(2.723197220e-03f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-8.399761282e-03f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.172728814e-02f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-5.394442752e-02f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.333314329e-01f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-3.333332837e-01f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, x2), x, x);
  const __m512 e = exp_avx512(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
  // 1 - 2e/(1+e) with a single final rounding: d = 1 + e is rounded, but its rounding error d_err is exact (Fast2Sum,
  // 1 >= e), and one Newton step against the exact 1 + e = d + d_err turns 1/d into 1/(1+e) to ~2^-46; the result
  // is then one fnmadd. The straightforward 1 - (e+e)/(1+e) rounds three times and measured 0.85 ulp worst case,
  // which bias_act's tanh backward (1 - t^2 from a recomputed t) magnified past the accuracy rule.
  const __m512 d = _mm512_add_ps(one, e);
  const __m512 d_err = _mm512_sub_ps(e, _mm512_sub_ps(d, one));
  const __m512 r0 = _mm512_div_ps(one, d);
  const __m512 residual = _mm512_fnmadd_ps(d_err, r0, _mm512_fnmadd_ps(d, r0, one));  // 1 - (1+e)*r0
  const __m512 r = _mm512_fmadd_ps(r0, residual, r0);
  const __m512 large = _mm512_fnmadd_ps(_mm512_add_ps(e, e), r, one);
  // NaN compares false, so a NaN takes the `large` branch, which is NaN too. `small` already carries x's sign;
  // OR-ing it in afterwards gives `large` its sign and keeps tanh(-0) = -0.
  const __m512 magnitude =
      _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.85f), _CMP_LT_OQ), large, small);
  return _mm512_or_ps(magnitude, _mm512_and_ps(x, sign));
}

inline Vectorized<float> exp(const Vectorized<float>& x) { return exp_avx512(x); }
inline Vectorized<float> tanh(const Vectorized<float>& x) { return tanh_avx512(x); }
inline Vectorized<float> erf(const Vectorized<float>& x) { return erf_avx512(x); }

#else  // other CPU capabilities keep at::vec's functions

inline Vectorized<float> exp(const Vectorized<float>& x) { return x.exp(); }
inline Vectorized<float> tanh(const Vectorized<float>& x) { return x.tanh(); }
inline Vectorized<float> erf(const Vectorized<float>& x) { return x.erf(); }

#endif

inline Vectorized<double> exp(const Vectorized<double>& x) { return x.exp(); }
inline Vectorized<double> erf(const Vectorized<double>& x) { return x.erf(); }
inline Vectorized<double> tanh(const Vectorized<double>& x) { return x.tanh(); }

}  // namespace fastops::cpu::vmath
