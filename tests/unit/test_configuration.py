"""The configuration reference cannot drift: every variable the code reads is a declared setting, every
declared setting is in docs/CONFIGURATION.md (generated, committed), and every ``MEDROUTE_*`` name the
docs, deploy files or code mention is one. Also ``medroute config check`` and the lean install's rules."""

from __future__ import annotations

import ast
import io
import re
import sys
import tomllib

import pytest

from medroute.config import REPO_ROOT, Setting
from shell import cli, configuration

_PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES: list[str] = _PYPROJECT["tool"]["importlinter"]["root_packages"]
ENV_HELPERS = {"env_str", "env_int", "env_float", "env_bool", "env_secret", "env_csv"}
NAME = re.compile(r"\bMEDROUTE_[A-Z0-9_]*[A-Z0-9]\b")


def sources() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(REPO_ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
    ]


def _is_area(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "SettingsArea"


def declarations_in_source() -> dict[str, str]:
    """Setting name -> file, for every ``AREA("NAME", ...)`` call in the packages."""
    trees = sources()
    areas = {
        target.id
        for _, tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _is_area(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found: dict[str, str] = {}
    for path, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Name) and node.func.id in areas) or _is_area(node.func)
            ):
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), f"{path}:{node.lineno}"
                found[first.value] = path
    return found


def known_names() -> set[str]:
    return {name for setting in configuration.declared().values() for name in setting.names}


def test_reference_is_generated_from_the_code() -> None:
    assert configuration.REFERENCE.read_text(encoding="utf-8") == configuration.reference(), (
        "docs/CONFIGURATION.md is out of date: run `medroute config reference`"
    )


def test_every_declaration_is_in_the_registry_and_back() -> None:
    in_source = declarations_in_source()
    registry = configuration.declared()
    missing = {name: path for name, path in in_source.items() if name not in registry}
    assert not missing, f"declared but not imported by shell.configuration.SETTINGS_MODULES: {missing}"
    assert set(registry) == set(in_source)


def test_only_declarations_read_variables() -> None:
    calls = [
        f"{path}:{node.lineno}"
        for path, tree in sources()
        if path != "medroute/config.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ENV_HELPERS
    ]
    assert not calls, "read variables through a declared Setting, not env_* directly: " + ", ".join(calls)


def test_every_variable_named_anywhere_is_a_setting() -> None:
    files = [path for package in PACKAGES for path in (REPO_ROOT / package).rglob("*.py")]
    files += [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md"), REPO_ROOT / "Makefile"]
    files += [path for path in (REPO_ROOT / "deploy").rglob("*") if path.is_file() and "lib" not in path.parts]
    known = known_names()
    unknown = sorted(
        {
            f"{path.relative_to(REPO_ROOT)}: {name}"
            for path in files
            for name in NAME.findall(path.read_text(encoding="utf-8", errors="replace"))
            if name not in known
        }
    )
    assert not unknown, "not declared settings:\n" + "\n".join(unknown)


def test_settings_read_their_declared_types(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from listeners.dicom.settings import DicomSettings
    from medroute.config import KafkaSettings

    monkeypatch.setenv("MEDROUTE_DICOM_ALLOWED_AES", "A, B,,")
    monkeypatch.setenv("MEDROUTE_DICOM_FAST_STORE", "off")
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.setenv("MEDROUTE_KAFKA_SASL_PASSWORD", "from-env")
    monkeypatch.setenv("MEDROUTE_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    dicom = DicomSettings()
    assert dicom.allowed_aes == ("A", "B") and dicom.fast_store is False
    assert KafkaSettings().sasl_password == "from-file"


def _check(process: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    return configuration.check(process, out=out), out.getvalue()


def test_check_masks_secrets_and_names_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_KAFKA_SASL_PASSWORD", "hunter22")
    monkeypatch.setenv("MEDROUTE_MLLP_PORT", "3575")
    code, out = _check("mllp")
    assert code == 0
    assert "hunter22" not in out and "MEDROUTE_KAFKA_SASL_PASSWORD=***  # environment" in out
    assert "MEDROUTE_MLLP_PORT=3575  # environment" in out and "MEDROUTE_HTTP_PORT" not in out


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MEDROUTE_MLLP_PRT", "2575", "MEDROUTE_MLLP_PRT: not a medroute setting"),
        ("MEDROUTE_BATCH_SIZE", "0", "MEDROUTE_BATCH_SIZE must be at least 1"),
        ("MEDROUTE_DICOM_PORT", "eleven", "MEDROUTE_DICOM_PORT must be an integer"),
        ("MEDROUTE_MLLP_TLS_CERT", "/cert.pem", "MEDROUTE_MLLP_TLS_KEY must be set together"),
        ("ENABLE_AUTH", "ture", "ENABLE_AUTH must be true or false"),
    ],
)
def test_check_refuses_bad_environments(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert _check()[0] == 1
    assert says in capsys.readouterr().err


def test_declarations_need_help_and_known_processes() -> None:
    from medroute.config import SettingsArea

    area = SettingsArea("Test", ("worker",))
    with pytest.raises(ValueError):
        area("MEDROUTE_TEST_NO_HELP", 1)
    with pytest.raises(ValueError):
        area("MEDROUTE_TEST_PROCESS", 1, "help", processes=("nowhere",))
    assert isinstance(configuration.declared()["MEDROUTE_MLLP_PORT"], Setting)


# --- the lean install ---------------------------------------------------------------------------------


def test_run_time_dependencies_have_no_training_packages() -> None:
    project = _PYPROJECT["project"]
    names = [re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower() for requirement in project["dependencies"]]
    # onnx is run time since encoder bundles are built at set-up (models.build); torch/transformers never are.
    training = {"torch", "torchvision", "transformers", "scikit-learn", "sklearn", "nvidia-cudnn-cu12"}
    assert not training & set(names), "training packages belong in the `train` extra"
    assert not [name for name in names if name.startswith(("efficientnet", "nvidia-", "torch"))]
    contract = next(c for c in _PYPROJECT["tool"]["importlinter"]["contracts"] if c["id"] == "training-apart")
    assert set(contract["forbidden_modules"]) == cli.TRAIN_PACKAGES


def test_training_verb_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fake_quantize.py").write_text("import sklearn\n")  # at import
    (tmp_path / "fake_finetune.py").write_text("def main(argv):\n    import torch\n")  # at run time
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "sklearn", None)
    for tool in ("fake_quantize", "fake_finetune"):
        assert cli.run_tool(tool, []) == 2
        assert "pip install 'medroute[train]'" in capsys.readouterr().err
