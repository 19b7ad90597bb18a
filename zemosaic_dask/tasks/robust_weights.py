"""Robust scale and Cauchy weights shared by the background model's fits."""

from __future__ import annotations

import numpy as np

__all__ = ["ROBUST_C", "cauchy_weights", "robust_sigma"]

#: Cauchy constant of the robust weights, in robust sigmas of the residuals.
ROBUST_C = 3.0


def robust_sigma(residual: np.ndarray) -> float:
    """1.4826 x the median absolute deviation of ``residual`` about its median (0 when empty)."""
    if residual.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def cauchy_weights(residual: np.ndarray, scale: float | np.ndarray | None = None) -> np.ndarray:
    """``1 / (1 + (r / (ROBUST_C s))^2)`` with ``s`` = ``scale`` or the residuals' own robust sigma.

    ``scale`` broadcasts against ``residual`` (one value per channel as a column); without
    it a zero robust sigma gives unit weights.
    """
    if scale is None:
        scale = robust_sigma(residual)
        if scale <= 0:
            return np.ones_like(residual)
    limit = ROBUST_C * np.maximum(np.asarray(scale, dtype=np.float64), 1e-12)
    return 1.0 / (1.0 + (residual / limit) ** 2)
