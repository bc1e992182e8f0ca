"""The model bundle: the daemon's only input about the model (see docs/bundle.md).

A bundle is a directory with ``model.onnx``, ``model.int8.onnx``, ``tokenizer.json``,
``report/`` and ``bundle.json``; the manifest records the sha256 of every other file so a
half-copied or tampered bundle is refused at load time instead of serving wrong labels.
Pure standard library: the serving image never needs torch to read or write bundles.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.enums import Variant
from streamer.errors import UsageError

FORMAT_VERSION = 1
MANIFEST = "bundle.json"
ONNX_FILES: dict[str, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
TOKENIZER_FILE = "tokenizer.json"
REQUIRED_FILES = (ONNX_FILES["fp32"], ONNX_FILES["int8"], TOKENIZER_FILE)
INT8_GATE_KEY = "int8_gate"  # bundle.json["export"][...]: passed, servable, reason
REQUIRED_KEYS = ("format_version", "name", "version", "created_at", "heads", "max_length", "files")


class BundleError(UsageError):
    """A bundle that cannot be served; the message names the file and the problem."""


@dataclass(frozen=True)
class HeadSpec:
    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    version: str
    heads: tuple[HeadSpec, ...]
    max_length: int
    manifest: dict[str, Any]

    def onnx_path(self, variant: Variant | str) -> Path:
        if variant not in ONNX_FILES:
            raise BundleError(f"{self.path}: unknown model variant {variant!r} (expected fp32 or int8)")
        return self.path / ONNX_FILES[variant]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    def int8_refusal(self) -> str | None:
        """Why the int8 graph must not be served, or None.

        Export writes the int8 graph even when it fails the precision gate (int8 within 0.5 point
        of fp32, 99.5% label agreement), so a bundle whose fp32 is fine still ships; the manifest
        then says the int8 graph is not servable unless the export was forced. Bundles exported
        before the gate was recorded passed the old all-or-nothing export, so they are servable.
        """
        export = self.manifest.get("export")
        gate = export.get(INT8_GATE_KEY) if isinstance(export, Mapping) else None
        if not isinstance(gate, Mapping) or gate.get("servable", True) is not False:
            return None
        why = gate.get("reason") or "no reason recorded"
        return (
            f"bundle {self.name} {self.version} ({self.path}): its int8 graph failed the export "
            f"precision gate ({why}); serve the fp32 graph (model.variant=fp32), or re-export "
            "with --force to accept int8 anyway"
        )

    def head(self, name: str) -> HeadSpec:
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(f"bundle {self.name} {self.version} has no head {name!r}")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _safe_member(root: Path, relpath: str, manifest_path: Path) -> Path:
    """Refuse manifest entries that point outside the bundle (absolute or ``..``)."""
    rel = Path(relpath)
    if rel.is_absolute() or ".." in rel.parts or relpath in ("", "."):
        raise BundleError(f"{manifest_path}: files entry {relpath!r} is not a path inside the bundle")
    return root / rel


def parse_heads(raw: Any, where: str) -> tuple[HeadSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise BundleError(f"{where}: 'heads' must be a non-empty list")
    heads: list[HeadSpec] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise BundleError(f"{where}: heads[{i}] must be an object with 'name' and 'labels'")
        name, labels = item.get("name"), item.get("labels")
        if not isinstance(name, str) or not name.isidentifier():
            raise BundleError(f"{where}: heads[{i}].name must be an identifier-like string, got {name!r}")
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels)
        ):
            raise BundleError(f"{where}: heads[{i}] ({name}) needs at least 2 non-empty string labels")
        if len(set(labels)) != len(labels):
            raise BundleError(f"{where}: heads[{i}] ({name}) has duplicate labels {labels}")
        heads.append(HeadSpec(name=name, labels=tuple(labels)))
    names = [h.name for h in heads]
    if len(set(names)) != len(names):
        raise BundleError(f"{where}: duplicate head names {names}")
    return tuple(heads)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse ``bundle.json`` (cheap: no hashing); used to notice a new version."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: bundle directory does not exist")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing bundle manifest")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path}: manifest must be a JSON object")
    return data


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Load and (by default) verify every file's sha256; refuse anything missing or altered.

    ``path`` may be a symlink (``models/current``); the returned ``Bundle.path`` is the
    resolved directory so a later symlink swap cannot mix files of two versions.
    """
    root = Path(path).resolve()
    manifest = read_manifest(root)
    where = str(root / MANIFEST)
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{where}: missing keys {missing}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"{where}: format_version {manifest['format_version']!r} is not supported (expected {FORMAT_VERSION})"
        )
    for key in ("name", "version"):
        if not isinstance(manifest[key], str) or not manifest[key]:
            raise BundleError(f"{where}: {key!r} must be a non-empty string")
    max_length = manifest["max_length"]
    if not isinstance(max_length, int) or isinstance(max_length, bool) or not 8 <= max_length <= 8192:
        raise BundleError(f"{where}: max_length must be an integer in [8, 8192], got {max_length!r}")
    heads = parse_heads(manifest["heads"], where)
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise BundleError(f"{where}: 'files' must map relative paths to sha256 hex strings")
    for required in REQUIRED_FILES:
        if required not in files:
            raise BundleError(f"{where}: 'files' does not list required file {required}")
    for relpath, expected in files.items():
        member = _safe_member(root, relpath, root / MANIFEST)
        if not member.is_file():
            raise BundleError(f"{member}: file listed in {MANIFEST} is missing")
        if verify:
            actual = sha256_file(member)
            if actual != expected:
                raise BundleError(
                    f"{member}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…): "
                    "the file was altered or only partly copied"
                )
    return Bundle(
        path=root,
        name=manifest["name"],
        version=manifest["version"],
        heads=heads,
        max_length=max_length,
        manifest=manifest,
    )


def hash_files(root: Path, exclude: Iterable[str] = (MANIFEST,)) -> dict[str, str]:
    """sha256 of every regular file under ``root`` (POSIX relative paths), sorted."""
    skip = set(exclude)
    out: dict[str, str] = {}
    for member in sorted(root.rglob("*")):
        if member.is_file():
            rel = member.relative_to(root).as_posix()
            if rel not in skip:
                out[rel] = sha256_file(member)
    return out


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Hash every file now in ``root`` and write ``bundle.json`` atomically (tmp + rename)."""
    full = dict(manifest)
    full["format_version"] = FORMAT_VERSION
    full["files"] = hash_files(root)
    for required in REQUIRED_FILES:
        if required not in full["files"]:
            raise BundleError(f"{root}: cannot write a bundle without {required}")
    parse_heads(full.get("heads"), str(root / MANIFEST))
    fd, tmp = tempfile.mkstemp(prefix=".bundle.", suffix=".json", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(full, fh, indent=2, sort_keys=False, ensure_ascii=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the daemon may run as another user
        os.replace(tmp, root / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return full
