"""Per-gene checkpoint files: safetensors (never pickle), written atomically, verified on load.

A gene's file, ``<root>/<parts...>/<gene>.safetensors``, holds every stored fold's weights and
scaler as tensors (``fold.<k>.state.<name>``, ``fold.<k>.scaler_mean``, ``fold.<k>.scaler_scale``),
the final model's the same way under ``final.``, and the rest as the header's string metadata:
``format``, ``gene``, ``model`` (the registry name; a file without it holds a CNN),
``protocol``, ``run_id``, ``config`` (JSON), ``probe_ids`` and ``folds`` (JSON lists; a fold is
``{fold, input_size, channels}``), ``final`` (JSON ``{fold, input_size, channels}``, only when the
file holds a final model) and ``content_sha256``, a digest of all of
those and of every tensor's name, dtype, shape and bytes, so a changed byte is refused even
without the registry's sha256 of the whole file.

The registry stores the key (the path relative to ``root``), so a copied data directory reads its
own files.

A step writes its files into a directory of its run while it holds that directory's shared lock
(``writing``); ``sweep`` deletes, in directories nobody holds, every file the registry does not
list: the files a registry row stopped naming and those a killed step left (unregistered
checkpoints, half-written ``.<gene>.safetensors.<uuid>``).
"""

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from dagster import ConfigurableResource
from pydantic import Field
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from dmg_ml.files import write_atomically
from dmg_ml.models.checkpoint import FoldCheckpoint, GeneCheckpoint

FORMAT = "dmg.gene_checkpoint/1"
SUFFIX = ".safetensors"
_DIGEST = "content_sha256"
FINAL_PREFIX = "final."
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")
#: The lock file of a directory that steps are writing (``CheckpointStore.writing``).
_WRITERS = ".writers.lock"


class CheckpointError(ValueError):
    """A checkpoint that was changed, or was never one this project wrote."""


class CheckpointStore(ConfigurableResource):
    root: str = Field(default="data/checkpoints", description="Directory of checkpoint files.")

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve()

    def key_for(self, *parts: str | int) -> str:
        """The registry key of ``parts`` (the last names the file): a relative posix path."""
        if not parts:
            raise ValueError("a checkpoint needs at least one path part")
        names = [_safe_name(p) for p in parts]
        return PurePosixPath(*names[:-1], names[-1] + SUFFIX).as_posix()

    def path_for(self, *parts: str | int) -> Path:
        return self.resolve(self.key_for(*parts))

    def resolve(self, key: str) -> Path:
        """The file of a registry key; a key that is absolute or climbs out of ``root`` is
        refused."""
        steps = str(key).split("/")
        if (
            PurePosixPath(key).is_absolute()
            or "\\" in key
            or any(step in ("", ".", "..") for step in steps)
        ):
            raise CheckpointError(
                f"checkpoint key {key!r} is not a plain path relative to the store root "
                "(registry rows from before the safetensors format hold absolute .pt paths: "
                "retrain those genes)"
            )
        return self.root_path.joinpath(*steps)

    def save(self, checkpoint: GeneCheckpoint, *parts: str | int) -> tuple[str, str]:
        """Write ``checkpoint`` as ``root/parts....safetensors``; returns its key and sha256."""
        key = self.key_for(*parts)
        data = _encode(checkpoint)
        write_atomically(self.resolve(key), data)
        return key, hashlib.sha256(data).hexdigest()

    @contextmanager
    def writing(self, *parts: str | int) -> Iterator[Path]:
        """Hold the directory ``parts`` names (a run's) against ``sweep`` while its files are
        written and registered; any number of steps may hold one directory at once."""
        directory = self.root_path.joinpath(*(_safe_name(p) for p in parts))
        while True:
            directory.mkdir(parents=True, exist_ok=True)
            handle = open(directory / _WRITERS, "a")  # noqa: SIM115 (held until the yield ends)
            fcntl.flock(handle, fcntl.LOCK_SH)
            with suppress(FileNotFoundError):
                if os.stat(directory / _WRITERS).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            handle.close()  # a sweep removed the directory between mkdir and the lock
        try:
            yield directory
        finally:
            handle.close()

    def sweep(self, registered: Callable[[], set[str]]) -> list[str]:
        """Delete the files of directories no step holds (``writing``) that ``registered()``,
        the keys the committed registry lists, does not name; returns the deleted keys.

        ``registered`` is called after those directories are locked, so a step that registered
        its files and let go just before is seen."""
        held = []
        try:
            for directory in sorted({p.parent for p in self.root_path.rglob("*") if p.is_file()}):
                handle = open(directory / _WRITERS, "a")  # noqa: SIM115
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()  # a live step's
                    continue
                held.append((directory, handle))
            keep = registered() if held else set()
            deleted = []
            for directory, _ in held:
                for path in sorted(directory.iterdir()):
                    key = path.relative_to(self.root_path).as_posix()
                    if path.is_file() and path.name != _WRITERS and key not in keep:
                        path.unlink()
                        deleted.append(key)
                if [p.name for p in directory.iterdir()] == [_WRITERS]:
                    (directory / _WRITERS).unlink()
                    with suppress(OSError):
                        directory.rmdir()
            return deleted
        finally:
            for _, handle in held:
                handle.close()

    def load(self, key: str, sha256: str | None = None) -> GeneCheckpoint:
        """Read the checkpoint of a registry key, refusing one whose bytes no longer match
        ``sha256`` or its own content digest. Nothing is unpickled, so a crafted file fails to
        parse and runs nothing."""
        data = self.resolve(key).read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise CheckpointError(f"checkpoint {key} does not match its recorded sha256")
        return _decode(data, key)


def _safe_name(part: str | int) -> str:
    name = _SAFE.sub("_", str(part))
    if name in ("", ".", ".."):
        raise ValueError(f"checkpoint path part {part!r} is empty, '.' or '..'")
    return name


def _encode(checkpoint: GeneCheckpoint) -> bytes:
    if not checkpoint.models:
        raise ValueError(f"{checkpoint.gene}: a checkpoint needs a fold model or a final model")
    tensors: dict[str, torch.Tensor] = {}
    folds = []
    for fold in checkpoint.folds:
        if any(entry["fold"] == fold.fold for entry in folds):
            raise ValueError(f"{checkpoint.gene}: fold {fold.fold} appears twice")
        folds.append(_put_model(tensors, f"fold.{fold.fold}.", fold))
    metadata = {
        "format": FORMAT,
        "gene": checkpoint.gene,
        "model": checkpoint.model,
        "protocol": checkpoint.protocol,
        "run_id": checkpoint.run_id,
        "config": checkpoint.config,
        "probe_ids": json.dumps([str(p) for p in checkpoint.probe_ids]),
        "folds": json.dumps(folds),
    }
    if checkpoint.final is not None:
        metadata["final"] = json.dumps(_put_model(tensors, FINAL_PREFIX, checkpoint.final))
    metadata[_DIGEST] = _content_sha256(tensors, metadata)
    return save_tensors(tensors, metadata)


def _put_model(tensors: dict[str, torch.Tensor], prefix: str, model: FoldCheckpoint) -> dict:
    """Add one model's weights and scaler under ``prefix``; returns its metadata entry."""
    for name, tensor in model.state_dict.items():
        tensors[f"{prefix}state.{name}"] = tensor.detach().to("cpu", copy=True).contiguous()
    tensors[f"{prefix}scaler_mean"] = _float64_tensor(model.scaler_mean)
    tensors[f"{prefix}scaler_scale"] = _float64_tensor(model.scaler_scale)
    return {"fold": int(model.fold), "input_size": int(model.input_size),
            "channels": model.channels}  # fmt: skip


def _float64_tensor(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(values, dtype=np.float64, copy=True))


def _decode(data: bytes, key: str) -> GeneCheckpoint:
    try:
        metadata = _header_metadata(data)
        tensors = load_tensors(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{key} is not a safetensors checkpoint ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{key}: unknown checkpoint format {metadata.get('format')!r}")
    if metadata.get(_DIGEST) != _content_sha256(tensors, metadata):
        raise CheckpointError(f"{key}: content does not match its content_sha256 (file changed)")
    try:
        return _gene_checkpoint(tensors, metadata)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{key}: malformed checkpoint metadata ({exc!r})") from exc


def _header_metadata(data: bytes) -> dict[str, str]:
    """The header's ``__metadata__`` (safetensors: 8-byte little-endian size, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        raise ValueError("header size exceeds the file")
    header = json.loads(data[8 : 8 + size])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise ValueError("no metadata in the header")
    return metadata


def _content_sha256(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Digest of the metadata (less this digest) and every tensor's name, dtype, shape, bytes."""
    digest = hashlib.sha256()
    fields = {name: value for name, value in metadata.items() if name != _DIGEST}
    digest.update(json.dumps(fields, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _gene_checkpoint(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> GeneCheckpoint:
    return GeneCheckpoint(
        gene=metadata["gene"],
        model=metadata.get("model", "cnn"),
        protocol=metadata["protocol"],
        probe_ids=[str(p) for p in json.loads(metadata["probe_ids"])],
        folds=[
            _model(tensors, f"fold.{entry['fold']}.", entry)
            for entry in json.loads(metadata["folds"])
        ],
        config=metadata["config"],
        run_id=metadata["run_id"],
        final=_model(tensors, FINAL_PREFIX, json.loads(metadata["final"]))
        if "final" in metadata
        else None,
    )


def _model(tensors: dict[str, torch.Tensor], prefix: str, entry: dict) -> FoldCheckpoint:
    state = {
        name.removeprefix(f"{prefix}state."): tensor
        for name, tensor in tensors.items()
        if name.startswith(f"{prefix}state.")
    }
    return FoldCheckpoint(
        fold=int(entry["fold"]),
        state_dict=state,
        scaler_mean=tensors[f"{prefix}scaler_mean"].numpy(),
        scaler_scale=tensors[f"{prefix}scaler_scale"].numpy(),
        input_size=int(entry["input_size"]),
        channels=str(entry["channels"]),
    )
