"""Every default a user sees, each declared once, in a module that imports nothing.

The config classes, the trainers and the ``dmg`` command's parsers all read them from here, so
``dmg run --help`` shows the defaults without loading Dagster, torch or pandas, and no copy can
drift from the value a run uses.
"""

#: The TCGA cohorts registered and built by default, and the one trained on.
COHORTS = ("BRCA", "COAD", "GBM", "LUAD")
TRAINING_COHORT = "BRCA"
#: Window half-width W (bp) the models train on: the paper's ±1 Mb.
WINDOW_BP = 1_000_000
#: The protocol every figure is scored with unless the published audit is asked for.
PROTOCOL = "honest"
#: The samples trained and scored on.
TISSUE = "all"
#: The models of the default run: the paper's CNN, its linear model, the floor and one forest.
MODELS = ("cnn", "enet", "mean", "rf")
#: The paper's training settings (Adam, MSE, early stopping with patience, full batch).
MAX_EPOCHS = 700
PATIENCE = 90
LEARNING_RATE = 1e-3
#: Seed of the folds, of the initial weights and of every model that draws.
SEED = 0
