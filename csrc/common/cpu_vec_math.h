// Inline float32 vector math for the CPU kernels (AVX-512 builds), used instead of at::vec's Sleef-based functions.
//
// Why: Vectorized<float>::exp() and erf() call Sleef_expf16_u10 out of line. Every zmm register is caller-saved in
// the x86-64 ABI, so a kernel that keeps two vectors in flight spills them all around each call; perf showed the
// gelu kernel's hot loop dominated by those stack reloads. These versions inline into the caller and keep everything
// in registers. float64 keeps at::vec's (Sleef) functions: the double kernels are not the CPU target and their
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

inline Vectorized<float> exp(const Vectorized<float>& x) { return exp_avx512(x); }
inline Vectorized<float> erf(const Vectorized<float>& x) { return erf_avx512(x); }

#else  // other CPU capabilities keep at::vec's functions

inline Vectorized<float> exp(const Vectorized<float>& x) { return x.exp(); }
inline Vectorized<float> erf(const Vectorized<float>& x) { return x.erf(); }

#endif

inline Vectorized<double> exp(const Vectorized<double>& x) { return x.exp(); }
inline Vectorized<double> erf(const Vectorized<double>& x) { return x.erf(); }

}  // namespace fastops::cpu::vmath
