"""Finding bundles by path, name and name@version, with MEDROUTE_MODELS_DIR ahead of the installed ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.bundle import MANIFEST
from models.registry import INSTALLED_DIR, MODELS_DIR_ENV, BundleNotFoundError, find_bundle, list_bundles

SHIPPED = INSTALLED_DIR / "doctype-en"
SHIPPED_REF = "doctype-en@" + json.loads((SHIPPED / MANIFEST).read_text())["version"]


def copy_as(source: Path, target: Path, **changes: str) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST).read_text())
    (target / MANIFEST).write_text(json.dumps({**manifest, **changes}))
    return target


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "site-models"
    directory.mkdir()
    monkeypatch.setenv(MODELS_DIR_ENV, f"{tmp_path / 'absent'}:{directory}")
    return directory


def test_installed_bundle_by_name_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert find_bundle("doctype-en") == SHIPPED.resolve()
    assert find_bundle(SHIPPED_REF) == SHIPPED.resolve()
    assert "doctype-en" in [bundle.name for bundle in list_bundles()]


def test_path_is_taken_as_is(tmp_path: Path) -> None:
    assert find_bundle(str(SHIPPED)) == SHIPPED.resolve()
    with pytest.raises(BundleNotFoundError, match="not a model bundle"):
        find_bundle(str(tmp_path))


def test_models_dir_comes_first_and_highest_version_wins(models_dir: Path) -> None:
    copy_as(SHIPPED, models_dir / "old", version="0.9.0")
    newer = copy_as(SHIPPED, models_dir / "new", version="0.10.0")
    assert find_bundle("doctype-en") == newer.resolve()  # site directory before installed; 0.10 > 0.9
    assert find_bundle("doctype-en@0.9.0") == (models_dir / "old").resolve()
    assert find_bundle(SHIPPED_REF) == SHIPPED.resolve()
    refs = [bundle.ref for bundle in list_bundles()]
    assert refs.index("doctype-en@0.9.0") < refs.index(SHIPPED_REF)


def test_not_found_lists_what_exists(models_dir: Path) -> None:
    copy_as(SHIPPED, models_dir / "other", name="specialty-en", version="2.0.0")
    with pytest.raises(BundleNotFoundError) as caught:
        find_bundle("doctype-fr")
    message = str(caught.value)
    assert "'doctype-fr'" in message and MODELS_DIR_ENV in message
    assert SHIPPED_REF in message and "specialty-en@2.0.0" in message
    with pytest.raises(LookupError, match=r"doctype-en@9\.9\.9"):
        find_bundle("doctype-en@9.9.9")
