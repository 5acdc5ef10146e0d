"""Every model of the comparison by name: adding a model is one class and one entry here.

Entries name the class by module and attribute and are imported on first use, so choosing
``enet`` does not load PyTorch. The registry sits in the evaluation layer because it names
models of every layer below (the baselines of ``dmg_ml.models``, the networks of
``dmg_ml.training``, ``best`` here), and ``best`` builds its candidates through it.

A model whose class has ``fit_folds`` (the CNN) is trained by the engine on every fold of many
genes at once; every other model is fitted fold by fold (``fit(X, y, groups)``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Literal, get_args

from dmg_ml.models.base import Regressor

ModelName = Literal["mean", "enet", "svr", "rf", "cascade_forest", "mlp", "cnn", "best"]

#: name → "module:class"; each class takes its parameters as constructor arguments.
MODELS: dict[str, str] = {
    "mean": "dmg_ml.models.baselines:MeanModel",
    "enet": "dmg_ml.models.baselines:ElasticNetGeneExplore",
    "svr": "dmg_ml.models.baselines:SVRModel",
    "rf": "dmg_ml.models.baselines:RandomForestModel",
    "cascade_forest": "dmg_ml.models.cascade:CascadeForest",
    "mlp": "dmg_ml.training.estimators:MLPRegressor",
    "cnn": "dmg_ml.training.estimators:CNNRegressor",
    "best": "dmg_ml.evaluation.best:BestModel",
}
#: Parameters a name gets unless the caller sets them: the paper's settings, made reproducible.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 100, "random_state": 0},
}

assert set(MODELS) == set(get_args(ModelName)), "ModelName and MODELS must list the same models"


def model_class(name: str) -> type:
    """The class registered under ``name``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    module, attribute = MODELS[name].split(":")
    return getattr(import_module(module), attribute)


def make_model(name: str, **params: Any) -> Regressor:
    """A fresh, unfitted model ``name`` built with ``params`` over its defaults."""
    return model_class(name)(**{**DEFAULT_PARAMS.get(name, {}), **params})


#: Models whose n_jobs pays on a small machine: the forests (rf 1.45x on 2 cores); enet's
#: threads over its inner folds cost more than they give at these sizes (about 8 % slower).
PARALLEL_MODELS = frozenset({"rf", "cascade_forest"})


def parallel_params(name: str, n_jobs: int) -> dict[str, Any]:
    """``{"n_jobs": n_jobs}`` for a model whose fit pays for workers, else nothing."""
    return {"n_jobs": n_jobs} if name in PARALLEL_MODELS else {}
