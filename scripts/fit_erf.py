"""Fits the polynomials of the float32 erf (csrc/common/cpu_vec_math.h: kErfSmall, kErfcLarge) and prints them as float
literals. The AVX levels evaluate them with FMA (erf), the portable level in SSE2 without (portable::erf_sse2):
  |x| < 1:  x + x * A(x^2),              A(s) ~ erf(sqrt(s)) / sqrt(s) - 1                     (degree 6)
  |x| >= 1: 1 - e * R(1 / (1 + |x|/2)),  e = exp(-x^2), R ~ erfc(x) * exp(x^2) as a function of t  (degree 7)
Each is a least-squares fit of the relative error at Chebyshev nodes against mpmath (30 digits), near-minimax: A's
relative error (as a fit of erf(x)/x) 1.4e-9, R's 4.0e-10, so the float evaluation's roundings make the whole error.
Beyond 4, erfc is below half an ulp of 1 and e below 1.2e-7, so the extrapolated R still rounds erf to 1. Written as
x + x*A rather than x*(1 + A): the small branch's roundings then scale with A (at most 0.16) instead of erf.
  python scripts/fit_erf.py
"""

import mpmath
import numpy as np

mpmath.mp.dps = 30


def chebyshev_nodes(lo: float, hi: float, n: int) -> np.ndarray:
    k = np.arange(n)
    return (lo + hi) / 2 - (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / n)


def relative_least_squares(t: np.ndarray, f: np.ndarray, degree: int) -> np.ndarray:
    """Monomial coefficients (lowest first) of the degree-`degree` fit of f at t minimizing the squared relative
    error, solved in t scaled to [-1, 1] for conditioning."""
    scale = np.abs(t).max()
    coef = np.linalg.lstsq(np.vander(t / scale, degree + 1, increasing=True) / f[:, None], np.ones_like(f),
                           rcond=None)[0]
    return coef / scale ** np.arange(degree + 1)


def main() -> None:
    x = chebyshev_nodes(0.0, 1.0, 600)
    small = relative_least_squares(x * x, np.array([float(mpmath.erf(v) / mpmath.mpf(v)) for v in x]), 6)
    small[0] -= 1.0  # A = erf(x)/x - 1
    x = chebyshev_nodes(1.0, 4.0, 1000)
    large = relative_least_squares(1 / (1 + x / 2), np.array([float(mpmath.erfc(v) * mpmath.exp(mpmath.mpf(v) ** 2))
                                                              for v in x]), 7)
    for name, coef in (("kErfSmall", small), ("kErfcLarge", large)):
        print(f"constexpr float {name}[] = {{" + ", ".join(f"{c:.9g}f" for c in coef) + "};")


if __name__ == "__main__":
    main()
