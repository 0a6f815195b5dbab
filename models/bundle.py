"""Model bundles: a directory holding ``manifest.json``, the ONNX graph(s) and the tokenizer.

The manifest names the model (``name@version``), its task and labels, the confidence thresholds,
how inputs are preprocessed, where the training data came from (sha256), dev-set metrics, and the
sha256 of every other file, so a worker can refuse a bundle that was altered after it was built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
REQUIRED_KEYS = ("name", "version", "task", "input_kind", "labels", "default_threshold", "preprocessing", "files")


class BundleError(Exception):
    """A bundle is missing, malformed or does not match its manifest; the message says which file."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    def threshold(self, label: str) -> float:
        """The minimum confidence for ``label``; below it a prediction is flagged, not dropped."""
        thresholds = self.manifest.get("thresholds") or {}
        return float(thresholds.get(label, self.manifest["default_threshold"]))

    def file(self, relative: str) -> Path:
        """A file the manifest lists, as a path inside the bundle."""
        if relative not in self.manifest["files"]:
            raise BundleError(f"{self.ref}: {relative} is not listed in {self.path / MANIFEST}")
        return self.path / relative


class BundleModel:
    """A loaded model answers to its bundle's name, version and labels."""

    bundle: Bundle

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def ref(self) -> str:
        return self.bundle.ref

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """The parsed, checked ``manifest.json`` of a bundle directory."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest (not a model bundle)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: manifest must be a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{path}: manifest lacks {', '.join(missing)}")
    labels = manifest["labels"]
    if not labels or not all(isinstance(label, str) for label in labels) or len(set(labels)) != len(labels):
        raise BundleError(f"{path}: labels must be a non-empty list of distinct strings")
    unknown = set(manifest.get("thresholds") or {}) - set(labels)
    if unknown:
        raise BundleError(f"{path}: thresholds for unknown labels: {', '.join(sorted(unknown))}")
    if not isinstance(manifest["files"], dict):
        raise BundleError(f"{path}: files must map relative paths to sha256 digests")
    for relative in manifest["files"]:
        pure = PurePosixPath(relative)
        if pure.is_absolute() or ".." in pure.parts or relative == MANIFEST:
            raise BundleError(f"{path}: file entry {relative!r} must be a relative path inside the bundle")
    return manifest


def verify_files(directory: str | Path) -> None:
    """Check every file listed in the manifest against its sha256; raise naming the first bad one."""
    directory = Path(directory)
    manifest = load_manifest(directory)
    ref = f"{manifest['name']}@{manifest['version']}"
    for relative, expected in manifest["files"].items():
        path = directory / relative
        if not path.is_file():
            raise BundleError(f"{ref}: {relative} is missing from {directory}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{ref}: {relative} does not match the manifest (sha256 {actual[:12]}…, "
                f"expected {str(expected)[:12]}…); the bundle in {directory} was altered or is incomplete"
            )


def load_bundle(directory: str | Path, *, verify: bool = True) -> Bundle:
    """A bundle from its directory, with its files checked against the manifest unless ``verify=False``."""
    directory = Path(directory).resolve()
    manifest = load_manifest(directory)
    if verify:
        verify_files(directory)
    return Bundle(path=directory, manifest=manifest)


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` with ``files`` set to the sha256 of every other file in ``directory``."""
    directory = Path(directory)
    files = {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    path = directory / MANIFEST
    path.write_text(json.dumps({**manifest, "files": files}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    load_manifest(directory)  # what was written must load
    return path
