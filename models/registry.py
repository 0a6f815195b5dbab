"""Finding model bundles by path, ``name`` or ``name@version``.

Names are looked up like ``PATH``: each directory of ``MEDROUTE_MODELS_DIR`` (colon-separated), then
the bundles installed with medroute (``models/bundles``). The first directory that holds a bundle of
that name answers; without a version it answers with its highest version.
"""

from __future__ import annotations

import re
from pathlib import Path

from medroute.config import SettingsArea
from models.bundle import MANIFEST, Bundle, BundleError, load_bundle

INSTALLED_DIR = Path(__file__).resolve().parent / "bundles"
MODELS = SettingsArea("Models", ("worker", "web", "tools"))
MODELS_DIR = MODELS("MEDROUTE_MODELS_DIR", None, "extra directories of model bundles (colon-separated, searched "
                    "before the shipped ones)")
MODELS_DIR_ENV = MODELS_DIR.name


class BundleNotFoundError(BundleError, LookupError):
    """No bundle answers to a name; the message lists those that exist."""


def search_dirs() -> list[Path]:
    """Where names are looked up, in order."""
    configured = MODELS_DIR() or ""
    return [Path(entry).expanduser() for entry in configured.split(":") if entry] + [INSTALLED_DIR]


def bundles_in(directory: Path) -> list[Bundle]:
    """The bundles directly under ``directory`` (manifests only; files are verified on load)."""
    if not directory.is_dir():
        return []
    return [load_bundle(child, verify=False) for child in sorted(directory.iterdir()) if (child / MANIFEST).is_file()]


def list_bundles() -> list[Bundle]:
    """Every bundle in the search directories, in lookup order."""
    return [bundle for directory in search_dirs() for bundle in bundles_in(directory)]


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders ``1.10.0`` after ``1.9.0``; non-numeric parts sort after numeric ones."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.+-]", version))


def find_bundle(name_or_path: str) -> Path:
    """The directory of a bundle given as a directory path, ``name`` or ``name@version``."""
    as_path = Path(name_or_path).expanduser()
    if as_path.is_dir():
        if not (as_path / MANIFEST).is_file():
            raise BundleNotFoundError(f"{as_path} is a directory but not a model bundle (no {MANIFEST})")
        return as_path.resolve()
    name, _, version = name_or_path.partition("@")
    for directory in search_dirs():
        matches = [bundle for bundle in bundles_in(directory) if bundle.name == name]
        if version:
            matches = [bundle for bundle in matches if bundle.version == version]
        if matches:
            return max(matches, key=lambda bundle: version_key(bundle.version)).path
    available = ", ".join(sorted({bundle.ref for bundle in list_bundles()})) or "none"
    searched = ", ".join(str(directory) for directory in search_dirs())
    raise BundleNotFoundError(
        f"no model bundle {name_or_path!r} (searched {searched}; set {MODELS_DIR_ENV} to add directories). "
        f"Available: {available}"
    )
