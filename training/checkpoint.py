"""Resumable training: the whole loop state in one file, written atomically every N steps.

A long run (the MPNet teacher: hours on CPU) that is stopped continues with ``--resume``
from its last checkpoint instead of from scratch. The file holds the weights, optimizer and
LR-schedule state, the sampler's position in every source, the RNG states, the best dev
checkpoint so far and the curves, so a resumed run takes the same steps as one that was
never stopped. It is saved only between draws of the length-bucketed batch pool, and it
records the recipe and data fingerprints: a checkpoint of another recipe or other data is
refused, naming the file and what differs. It is deleted once the bundle is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig, TrainError
from training.dataset import Prepared

# Recipe fields that do not change what is trained (how the run is driven, where it goes).
VOLATILE = ("progress", "threads", "force", "overwrite", "resume", "checkpoint_every", "version", "strict")


def checkpoint_path(config: TrainConfig) -> Path:
    out = Path(config.output)
    return out.with_name(f"{out.name}.checkpoint.pt")


def identity(config: TrainConfig, prep: Prepared) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: the recipe and the data actually used."""
    recipe = {k: v for k, v in config.to_json().items() if k not in VOLATILE}
    data = [
        {k: d.get(k) for k in ("head", "path", "role", "fingerprint", "train", "dev")} for d in prep.data_info
    ]
    return {"recipe": recipe, "data": data}


@dataclass
class Checkpointer:
    path: Path
    every: int | None
    ident: dict[str, Any]
    last_saved: int = 0

    def due(self, step: int, between_pools: bool) -> bool:
        return self.every is not None and between_pools and step - self.last_saved >= self.every

    def save(self, state: dict[str, Any], step: int) -> None:
        import torch

        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save({"identity": self.ident, **state}, tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self.last_saved = step

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is no checkpoint; a foreign one is refused."""
        import torch

        if not self.path.exists():
            return None
        try:
            state: dict[str, Any] = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise TrainError(f"{self.path}: unreadable checkpoint ({exc}); delete it to start over") from exc
        saved = state.get("identity", {})
        diff = sorted(
            k for k in {*saved.get("recipe", {}), *self.ident["recipe"]}
            if saved.get("recipe", {}).get(k) != self.ident["recipe"].get(k)
        )  # fmt: skip
        if saved.get("data") != self.ident["data"]:
            diff.append("data (a source's rows changed)")
        if diff:
            raise TrainError(
                f"{self.path}: checkpoint of another run (differs in {diff}); delete it or drop --resume"
            )
        self.last_saved = int(state["step"])
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
