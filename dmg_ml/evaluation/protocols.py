"""How each protocol runs every model and which figure headlines it (docs/design.md §5).

The folds themselves come from ``dmg_ml.data.splits``. Honest: features standardised with a
scaler fitted on the outer training rows only, the headline the pooled out-of-fold R²
(coefficient of determination). The published audit runs each model as the authors' scripts ran
it: their SVM, random-forest, Deep Forest and CNN scripts scale nothing, so features stay raw
there except for the models in ``PUBLISHED_SCALED`` (``enet``: geneEXPLORE's ``glmnet``
standardises the features itself; ``best`` is dmg's own and its candidates expect standardised
features); the random forest gets their ``random_state=42`` (``PUBLISHED_PARAMS``) unless the
caller sets one; the CNN trains in fp32. Its headline per model is the authors' figure
(``PUBLISHED_HEADLINE``).

``headline_metric`` is the one rule: the tables, the report and the docs all take the headline
from it.
"""

from __future__ import annotations

from typing import Any

from dmg_ml.data.splits import HONEST, PUBLISHED

#: Models whose features the published audit still standardises (on the outer training rows).
PUBLISHED_SCALED = frozenset({"enet", "best"})
#: Constructor arguments of the authors' scripts, under the caller's ``params``.
PUBLISHED_PARAMS: dict[str, dict[str, Any]] = {"rf": {"random_state": 42}}
#: The figure the authors reported per model (the paper's table): their CNN script averages the
#: per-fold squared Pearson correlation, their SVM, random-forest and Deep Forest scripts the
#: per-fold ``r2_score``; geneEXPLORE squares the correlation of all pre-validated predictions
#: with y (pooled). ``mlp`` is scored as the CNN; other models as their scikit-learn baselines.
PUBLISHED_HEADLINE = {
    "cnn": "mean_fold_pearson_r2",
    "cnn_last_epoch": "mean_fold_pearson_r2",
    "mlp": "mean_fold_pearson_r2",
    "svr": "mean_fold_r2",
    "rf": "mean_fold_r2",
    "cascade_forest": "mean_fold_r2",
    "enet": "pearson_r2",
}
#: The honest headline of every model: pooled out-of-fold R².
HONEST_HEADLINE = "r2"


def headline_metric(model: str, protocol: str) -> str:
    """The ``gene_metrics`` column a model's results are headlined by: pooled out-of-fold R²
    when honest, the authors' own figure (``PUBLISHED_HEADLINE``) in the published audit."""
    if protocol == HONEST:
        return HONEST_HEADLINE
    if protocol == PUBLISHED:
        return PUBLISHED_HEADLINE.get(model, "mean_fold_r2")
    raise ValueError(f"unknown protocol {protocol!r}")


def headline_columns(model: str, protocol: str) -> tuple[str, str]:
    """The (R², r²) columns of ``gene_metrics`` that go with the headline: pooled
    (``r2``, ``pearson_r2``) or the means over folds (``mean_fold_r2``, ``mean_fold_pearson_r2``),
    whichever kind the headline metric is."""
    if headline_metric(model, protocol).startswith("mean_fold_"):
        return "mean_fold_r2", "mean_fold_pearson_r2"
    return "r2", "pearson_r2"
