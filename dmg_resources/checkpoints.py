"""Per-gene checkpoint files, written atomically and registered by path and sha256."""

import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any

import torch
from dagster import ConfigurableResource
from pydantic import Field

_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


class CheckpointStore(ConfigurableResource):
    root: str = Field(default="data/checkpoints", description="Directory of checkpoint files.")

    def path_for(self, *parts: str | int) -> Path:
        names = [_SAFE.sub("_", str(p)) for p in parts]
        return Path(self.root).resolve().joinpath(*names[:-1], f"{names[-1]}.pt")

    def save(self, payload: dict[str, Any], *parts: str | int) -> tuple[Path, str]:
        """Write ``payload`` under ``root/parts...pt``; returns its path and sha256."""
        path = self.path_for(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            torch.save(payload, staging)
            digest = _sha256(staging)
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)
        return path, digest

    @staticmethod
    def load(path: str | Path, sha256: str | None = None) -> dict[str, Any]:
        """Read a checkpoint, refusing one whose bytes no longer match ``sha256``."""
        if sha256 is not None and _sha256(Path(path)) != sha256:
            raise ValueError(f"checkpoint {path} does not match its recorded sha256")
        return torch.load(path, map_location="cpu", weights_only=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
