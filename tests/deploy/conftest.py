"""Fixtures for the chart tests: the pinned helm binary and the deploy-check module."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.chart import ROOT

Render = Callable[..., list[dict[str, Any]]]


def _load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sentiwire_deploy_check", ROOT / "deploy" / "check.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def deploy_check() -> ModuleType:
    return _load_check()


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """The pinned helm from .helm/ (`make helm` builds it with go install if it is missing)."""
    found = sorted(ROOT.glob(".helm/v*/helm"))
    if not found:
        proc = subprocess.run(["make", "-s", "helm"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            pytest.fail(f"`make helm` failed:\n{proc.stdout}{proc.stderr}")
        found = sorted(ROOT.glob(".helm/v*/helm"))
    return str(found[-1])


@pytest.fixture(scope="session")
def render(helm_bin: str, deploy_check: ModuleType) -> Render:
    """render(*values_files, sets=[...]) -> rendered objects (values paths relative to the chart)."""

    def _render(*values: str, sets: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
        objs: list[dict[str, Any]] = deploy_check.helm_template(helm_bin, values, sets)
        return objs

    return _render
