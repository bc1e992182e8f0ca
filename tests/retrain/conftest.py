"""Session fixtures for retraining tests: real data splits and one weak served bundle, trained once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.retrain.helpers import Splits, make_splits, train_current


@pytest.fixture(scope="session")
def retrain_splits(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Splits:
    return make_splits(shared_data, tmp_path_factory.mktemp("retrain-data"))


@pytest.fixture(scope="session")
def weak_bundle(retrain_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version v0, trained through the real trainer on shuffled labels (a model worth replacing)."""
    models = tmp_path_factory.mktemp("weak-template")
    return train_current(retrain_splits.base_shuffled, models)


def served_copy(bundle: Path, models: Path) -> Path:
    """``models/current -> versions/<v>`` holding a copy of ``bundle``; returns the symlink."""
    from training.retrain.registry import swap_symlink

    dest = models / "versions" / bundle.name
    shutil.copytree(bundle, dest)
    swap_symlink(models / "current", dest)
    return models / "current"
