"""The two R² definitions every model reports (docs/design.md §5).

``r2`` is the coefficient of determination (sklearn ``r2_score``): it can be negative and punishes
bias and wrong scale. ``pearson_r2`` is the squared Pearson correlation, the figure the authors
reported for their CNN: it ignores bias and scale, is never negative, and on held-out predictions
is often well above ``r2``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import r2_score


def r2(y: np.ndarray, yhat: np.ndarray) -> float:
    """Coefficient of determination, exactly ``sklearn.metrics.r2_score``; NaN (undefined, as
    there) without sklearn's warning for fewer than two samples, e.g. a fold of a tiny tissue."""
    y, yhat = np.asarray(y, dtype=np.float64), np.asarray(yhat, dtype=np.float64)
    if y.size < 2:
        return float("nan")
    return float(r2_score(y, yhat))


def pearson_r2(y: np.ndarray, yhat: np.ndarray) -> float:
    """Squared Pearson correlation of ``y`` and ``yhat``.

    Defined as 0 when either side is constant (the correlation is undefined there, and a constant
    prediction explains none of the variance), so the figure is never NaN.
    """
    a = np.asarray(y, dtype=np.float64).ravel()
    b = np.asarray(yhat, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if a.size < 2 or denom == 0.0 or not np.isfinite(denom):
        return 0.0
    r = float((a * b).sum()) / denom
    return min(1.0, r * r)
