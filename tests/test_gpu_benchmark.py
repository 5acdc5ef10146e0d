"""The GPU benchmark's timing rule, checked with a fake clock (the benchmark itself runs on a GPU
machine; its figures reach the team only through notes, so its arithmetic is tested here)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_trainer():
    spec = importlib.util.spec_from_file_location("gpu_trainer", ROOT / "benchmarks/gpu_trainer.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT))
    return module


class FakeRun:
    """A run of E epochs that costs a set-up (varying from run to run, as drawing initial weights
    and copying them does) plus E epochs of ``per_epoch`` seconds, on a fake clock."""

    def __init__(self, setups: list[float], per_epoch: float) -> None:
        self.now, self.setups, self.per_epoch, self.calls = 0.0, list(setups), per_epoch, []

    def clock(self) -> float:
        return self.now

    def __call__(self, epochs: int) -> None:
        self.calls.append(epochs)
        self.now += (self.setups.pop(0) if self.setups else 0.5) + epochs * self.per_epoch


def test_steady_grows_the_run_until_epochs_outweigh_the_set_up_jitter(gpu_trainer) -> None:
    """On an H100, 60 tasks at L=215 ran 10 epochs in less time than their set-up varied by, and
    the table printed a negative time per epoch."""
    run = FakeRun(setups=[1.0, 0.9, 0.6, 0.6, 0.6, 0.6], per_epoch=0.007)
    per_epoch, seconds = gpu_trainer.steady(
        run, 12, 2, torch.device("cpu"), min_seconds=2.0, clock=run.clock
    )
    assert run.calls[:3] == [2, 2, 12] and run.calls[-1] > 12
    assert run.calls[-1] * 0.007 >= 2.0
    assert per_epoch == pytest.approx(0.007, rel=0.15)
    assert seconds == pytest.approx(0.6 + run.calls[-1] * 0.007)


def test_steady_stops_at_the_first_run_long_enough(gpu_trainer) -> None:
    run = FakeRun(setups=[0.1, 0.1, 0.1], per_epoch=0.5)
    per_epoch, _ = gpu_trainer.steady(run, 12, 2, torch.device("cpu"), clock=run.clock)
    assert run.calls == [2, 2, 12]
    assert per_epoch == pytest.approx(0.5)


def test_cnn_params_carry_every_training_setting(gpu_trainer) -> None:
    """The benchmarks train through ``evaluate``: a ``TrainConfig`` becomes ``CNNRegressor``'s
    arguments, losing nothing on the way."""
    from dmg_ml.training.estimators import CNNRegressor
    from dmg_ml.training.reference import TrainConfig

    trainer_speed = sys.modules[gpu_trainer.simulate_cohort.__module__]
    config = TrainConfig(max_epochs=7, patience=3, lr=0.01, batch_size=16, seed=5,
                         channels="fixed", precision="bf16", restore_best_weights=False)
    model = CNNRegressor(**trainer_speed.cnn_params(config, "reference", "cpu"), seed=config.seed)
    assert model._config() == config
    assert (model.trainer, model.device) == ("reference", "cpu")


def test_cross_validate_cnn_counts_every_fold_epoch(gpu_trainer) -> None:
    from dmg_ml.training.reference import TrainConfig

    genes = gpu_trainer.simulate_cohort(40, [12], seed=0)
    (result,) = gpu_trainer.cross_validate_cnn(genes, TrainConfig(max_epochs=2, patience=3))
    assert (result.model, result.protocol) == ("cnn", "honest")
    assert gpu_trainer.epochs_run(result) == 5 * 2
