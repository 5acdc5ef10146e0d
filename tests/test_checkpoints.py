"""Checkpoint files: safetensors round trip, no pickle, integrity, keys relative to the root."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dmg_ml.models.checkpoint import FoldCheckpoint, FoldModel, GeneCheckpoint, load_fold_model
from dmg_ml.training.reference import init_model
from dmg_resources.checkpoints import CheckpointStore

PARTS = ("BRCA", "honest", "w1000000", "TP53")
KEY = "BRCA/honest/w1000000/TP53.safetensors"
LENGTH = 12


def _fold(fold: int) -> FoldCheckpoint:
    model = init_model(LENGTH, "adaptive", seed=fold)
    rng = np.random.default_rng(fold)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return FoldCheckpoint(
        fold, state, rng.normal(size=LENGTH), rng.uniform(0.5, 2, size=LENGTH), LENGTH, "adaptive"
    )


@pytest.fixture(scope="module")
def checkpoint() -> GeneCheckpoint:
    return GeneCheckpoint(
        gene="TP53",
        protocol="honest",
        probe_ids=[f"cg{i:08d}" for i in range(LENGTH)],
        folds=[_fold(k) for k in range(3)],
        config=json.dumps({"window_bp": 1_000_000, "protocol": "honest"}),
        run_id="run-1",
    )


@pytest.fixture
def store(tmp_path) -> CheckpointStore:
    return CheckpointStore(root=str(tmp_path / "checkpoints"))


def _tensor_data_offset(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_save_returns_a_relative_key_and_the_file_sha256(store, checkpoint) -> None:
    key, digest = store.save(checkpoint, *PARTS)
    path = Path(store.root) / KEY
    assert key == KEY
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in path.parent.iterdir()) == ["TP53.safetensors"]


def test_a_loaded_checkpoint_rebuilds_models_that_predict_as_the_saved_ones(
    store, checkpoint
) -> None:
    key, digest = store.save(checkpoint, *PARTS)
    loaded = store.load(key, digest)
    assert (loaded.gene, loaded.protocol, loaded.probe_ids, loaded.config, loaded.run_id,
            loaded.model) == (
        checkpoint.gene, checkpoint.protocol, checkpoint.probe_ids, checkpoint.config,
        checkpoint.run_id, "cnn",
    )
    X = np.random.default_rng(9).normal(size=(7, LENGTH)).astype(np.float32)
    assert [f.fold for f in loaded.folds] == [0, 1, 2]
    for saved, fold in zip(checkpoint.folds, loaded.folds, strict=True):
        assert (fold.input_size, fold.channels) == (LENGTH, "adaptive")
        assert fold.scaler_mean.dtype == np.float64
        np.testing.assert_array_equal(fold.scaler_mean, saved.scaler_mean)
        np.testing.assert_array_equal(fold.scaler_scale, saved.scaler_scale)
        assert fold.state_dict.keys() == saved.state_dict.keys()
        for name, tensor in saved.state_dict.items():
            assert torch.equal(fold.state_dict[name], tensor)
        network = init_model(LENGTH, "adaptive", 0)
        network.load_state_dict(saved.state_dict)
        original = FoldModel(network.eval(), saved.scaler_mean, saved.scaler_scale)
        np.testing.assert_array_equal(load_fold_model(fold).predict(X), original.predict(X))


def test_the_file_is_safetensors_with_json_metadata(store, checkpoint) -> None:
    key, _ = store.save(checkpoint, *PARTS)
    from safetensors import safe_open

    with safe_open(Path(store.root) / key, framework="pt") as handle:
        metadata = handle.metadata()
        names = set(handle.keys())
    assert metadata["format"] == "dmg.gene_checkpoint/1"
    assert metadata["model"] == "cnn"
    assert json.loads(metadata["probe_ids"]) == checkpoint.probe_ids
    assert json.loads(metadata["folds"])[1] == {"fold": 1, "input_size": 12, "channels": "adaptive"}
    assert len(metadata["content_sha256"]) == 64
    assert {"fold.2.scaler_mean", "fold.2.scaler_scale"} <= names
    assert all(n.startswith(("fold.0.", "fold.1.", "fold.2.")) for n in names)


def test_the_model_name_round_trips(store, checkpoint) -> None:
    last_epoch = GeneCheckpoint(**{**checkpoint.__dict__, "model": "cnn_last_epoch"})
    key, digest = store.save(last_epoch, *PARTS)
    assert store.load(key, digest).model == "cnn_last_epoch"


def test_a_changed_sha256_is_refused(store, checkpoint) -> None:
    key, digest = store.save(checkpoint, *PARTS)
    with pytest.raises(ValueError, match="sha256"):
        store.load(key, "0" * 64)
    assert store.load(key, digest).gene == "TP53"


@pytest.mark.parametrize("with_sha256", [True, False], ids=["with-sha256", "without-sha256"])
def test_a_flipped_byte_in_the_tensor_data_is_refused(store, checkpoint, with_sha256) -> None:
    key, digest = store.save(checkpoint, *PARTS)
    path = Path(store.root) / key
    _flip(path, _tensor_data_offset(path) + 5)
    with pytest.raises(ValueError, match="sha256"):
        store.load(key, digest if with_sha256 else None)


def test_a_changed_probe_id_in_the_header_is_refused_without_a_sha256(store, checkpoint) -> None:
    key, _ = store.save(checkpoint, *PARTS)
    path = Path(store.root) / key
    path.write_bytes(path.read_bytes().replace(b"cg00000003", b"cg00000004", 1))
    with pytest.raises(ValueError, match="content_sha256"):
        store.load(key)


class _Payload:
    """Unpickling this creates ``marker``: the proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_crafted_pickle_is_refused_and_runs_nothing(store, tmp_path) -> None:
    live = tmp_path / "payload-is-live"
    torch.save({"folds": _Payload(live)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert live.exists()  # the payload does run under pickle

    marker = tmp_path / "code-was-run"
    path = store.path_for(*PARTS)
    path.parent.mkdir(parents=True)
    torch.save({"folds": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        store.load(KEY)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 4, b"garbage" * 100, b"\xff" * 64])
def test_garbage_is_refused_with_a_clear_error(store, content) -> None:
    path = store.path_for(*PARTS)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        store.load(KEY)


def test_a_copied_root_loads_by_key_after_the_original_is_gone(
    store, checkpoint, tmp_path
) -> None:
    key, digest = store.save(checkpoint, *PARTS)
    copy = tmp_path / "elsewhere" / "checkpoints"
    shutil.copytree(store.root, copy)
    shutil.rmtree(store.root)
    loaded = CheckpointStore(root=str(copy)).load(key, digest)
    assert loaded.gene == "TP53" and len(loaded.folds) == 3


def test_a_relative_root_resolves_against_the_working_directory(
    checkpoint, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    key, digest = CheckpointStore(root="data/checkpoints").save(checkpoint, *PARTS)
    assert key == KEY and (tmp_path / "data" / "checkpoints" / key).is_file()
    assert CheckpointStore(root="data/checkpoints").load(key, digest).gene == "TP53"


@pytest.mark.parametrize(
    "key",
    [
        "/etc/passwd",
        "../outside.safetensors",
        "BRCA/../../outside.safetensors",
        "BRCA/./TP53.safetensors",
        "BRCA//TP53.safetensors",
        "BRCA\\TP53.safetensors",
    ],
)
def test_keys_that_leave_the_root_are_refused(store, key) -> None:
    with pytest.raises(ValueError, match="relative to the store root"):
        store.load(key)


def test_an_absolute_path_to_a_real_checkpoint_is_refused(store, checkpoint) -> None:
    key, digest = store.save(checkpoint, *PARTS)
    with pytest.raises(ValueError, match="relative to the store root"):
        store.load(str(Path(store.root).resolve() / key), digest)


@pytest.mark.parametrize("parts", [("..", "honest", "TP53"), ("BRCA", ".", "TP53"),
                                   ("BRCA", "", "TP53"), ("BRCA", "honest", ".."), ()])
def test_path_parts_that_are_empty_or_dots_are_refused(store, parts) -> None:
    with pytest.raises(ValueError):
        store.path_for(*parts)


def test_path_parts_are_sanitised_into_one_directory_level_each(store) -> None:
    assert store.key_for("BR/CA", "honest", 1000, "?|123") == "BR_CA/honest/1000/__123.safetensors"
    assert store.path_for(*PARTS) == Path(store.root).resolve() / KEY


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_staging(
    store, checkpoint, monkeypatch
) -> None:
    key, digest = store.save(checkpoint, *PARTS)

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        store.save(checkpoint, *PARTS)
    monkeypatch.undo()
    path = Path(store.root) / key
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert store.load(key, digest).gene == "TP53"


@pytest.mark.parametrize("kept_folds", [3, 0])
def test_a_final_model_round_trips_beside_the_folds_or_alone(store, checkpoint, kept_folds) -> None:
    final = _fold(7)
    saved = GeneCheckpoint(**{**checkpoint.__dict__, "folds": checkpoint.folds[:kept_folds],
                              "final": final})  # fmt: skip
    key, digest = store.save(saved, *PARTS)
    loaded = store.load(key, digest)
    assert [f.fold for f in loaded.folds] == list(range(kept_folds))
    assert loaded.final is not None and loaded.final.fold == 7
    assert [m.fold for m in loaded.models] == [*range(kept_folds), 7]
    X = np.random.default_rng(3).normal(size=(5, LENGTH)).astype(np.float32)
    np.testing.assert_array_equal(
        load_fold_model(loaded.final).predict(X), load_fold_model(final).predict(X)
    )
    sizes = {k: (Path(store.root) / store.save(c, "size", k)[0]).stat().st_size
             for k, c in (("folds", checkpoint), ("final", saved))}  # fmt: skip
    assert (sizes["final"] < sizes["folds"]) == (kept_folds == 0)


def test_a_checkpoint_without_any_model_is_refused(store, checkpoint) -> None:
    empty = GeneCheckpoint(**{**checkpoint.__dict__, "folds": []})
    with pytest.raises(ValueError, match="fold model or a final model"):
        store.save(empty, *PARTS)
    assert not (Path(store.root) / KEY).exists()


def test_sweep_deletes_what_the_registry_does_not_name_outside_the_directories_being_written(
    store, checkpoint
) -> None:
    """Issue 22, case 8: a kill at the rename leaves ``.<gene>.safetensors.<uuid>``, and a kill
    after the commit leaves the replaced run's files: the next sweep deletes both, never the
    files of a step still writing."""
    dead_run, live_run = ("BRCA", "honest", "w1", "dead"), ("BRCA", "honest", "w1", "live")
    kept, _ = store.save(checkpoint, *dead_run, "KEPT")
    dropped, _ = store.save(checkpoint, *dead_run, "DROPPED")
    stage = store.root_path.joinpath(*dead_run, ".TP53.safetensors.0123abcd")
    stage.write_bytes(b"half a file")
    other_run, _ = store.save(checkpoint, "BRCA", "honest", "w1", "old", "TP53")
    calls = []

    def registered() -> set[str]:
        calls.append(1)
        return {kept}

    with store.writing(*live_run) as directory:
        unregistered_yet, _ = store.save(checkpoint, *live_run, "NEW")
        deleted = store.sweep(registered)
        assert (directory / "NEW.safetensors").exists()
    assert sorted(deleted) == sorted(
        [dropped, other_run, "BRCA/honest/w1/dead/.TP53.safetensors.0123abcd"])
    assert calls == [1] and store.load(kept).gene == "TP53"
    assert not store.root_path.joinpath("BRCA", "honest", "w1", "old").exists()
    assert store.sweep(lambda: {kept, unregistered_yet}) == []
