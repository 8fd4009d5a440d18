"""Key distillation: pure functions on numpy arrays, numba kernels with plain-numpy twins."""
