"""DeepMethyGene's data handling, model and training, independent of Dagster.

Importing the package sets the OpenMP wait policy before any of its modules imports torch
(:func:`dmg_ml.runtime.configure_threads`): import ``dmg_ml`` before torch in every
entry point.
"""

from dmg_ml.runtime import configure_threads

configure_threads()
