"""Python-side registrations of the fastops operators: fake (meta) kernels, autograd and autocast rules.

One module per op family; importing this package registers them all.
"""

from . import (
    activations,  # noqa: F401
    linear_cross_entropy,  # noqa: F401
    losses,  # noqa: F401
    matmul,  # noqa: F401
    softmax,  # noqa: F401
)
