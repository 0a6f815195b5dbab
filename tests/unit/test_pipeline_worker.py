"""Start-up of the worker: settings, the Faust app's configuration, refusing invalid rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faust
import pytest

from medroute.config import REPO_ROOT, KafkaSettings
from models.registry import list_bundles
from pipeline.app import APP_ID, broker_credentials, create_app
from pipeline.settings import WorkerSettings
from pipeline.worker import StartupError, load_image_classifier
from tests.unit.test_pipeline_support import build_tiny_image_bundle


def test_invalid_rules_stop_start_up_with_the_line(tmp_path: Path) -> None:
    routes = tmp_path / "site-routes.yaml"
    routes.write_text("rules:\n  - name: a\n    lable: letter\n    destinations: [ris]\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "MEDROUTE_ROUTES": str(routes),
        "MEDROUTE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "MEDROUTE_HOME": str(tmp_path),
    }
    done = subprocess.run([sys.executable, "-m", "pipeline"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{routes}:3: unknown key 'lable'" in done.stderr


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_BATCH_SIZE", "32")
    monkeypatch.setenv("MEDROUTE_BATCH_MS", "5")
    monkeypatch.setenv("MEDROUTE_TEXT_MODEL", "doctype-en@2")
    settings = WorkerSettings()
    assert (settings.batch_size, settings.batch_seconds, settings.text_model) == (32, 0.005, "doctype-en@2")
    monkeypatch.setenv("MEDROUTE_BATCH_SIZE", "0")
    with pytest.raises(SystemExit, match="MEDROUTE_BATCH_SIZE must be at least 1"):
        WorkerSettings()


def test_faust_app_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_HOME", str(tmp_path))
    kafka = KafkaSettings(bootstrap="k1:9092,k2:9092", partitions=6)
    app = create_app(kafka, WorkerSettings())
    conf = app.conf
    assert conf.id == APP_ID == "medroute-worker"
    assert [str(url) for url in conf.broker] == ["kafka://k1:9092", "kafka://k2:9092"]
    assert conf.topic_partitions == 6
    assert conf.value_serializer == "raw" and conf.store.scheme == "memory"
    assert conf.broker_session_timeout == 10.0
    assert conf.web_enabled is False
    assert Path(conf.datadir) == tmp_path / "worker"
    assert conf.broker_credentials is None


def test_tls_and_sasl_reach_faust() -> None:
    sasl = broker_credentials(
        KafkaSettings(
            bootstrap="k:9093",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="medroute",
            sasl_password="secret",
        )
    )
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value) == ("medroute", "secret", "SCRAM-SHA-512")
    assert sasl.protocol.value == "SASL_PLAINTEXT"
    tls = broker_credentials(KafkaSettings(bootstrap="k:9093", security_protocol="SSL"))
    assert isinstance(tls, faust.SSLCredentials)


def test_an_image_model_that_is_named_but_not_installed_stops_start_up(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "MEDROUTE_IMAGE_MODEL": "cxr-nonexistent",
        "MEDROUTE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "MEDROUTE_HOME": str(tmp_path),
        "MEDROUTE_MODELS_DIR": str(tmp_path / "models"),
    }
    done = subprocess.run([sys.executable, "-m", "pipeline"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot load image model 'cxr-nonexistent' (MEDROUTE_IMAGE_MODEL)" in done.stderr


def test_image_model_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("MEDROUTE_IMAGE_MODEL", raising=False)
    settings = WorkerSettings()
    assert (settings.image_model, settings.image_model_required) == ("cxr-pneumonia", False)
    if not any(bundle.name == "cxr-pneumonia" for bundle in list_bundles()):
        assert load_image_classifier(settings) is None  # not installed: metadata-only, no failure

    monkeypatch.setenv("MEDROUTE_IMAGE_MODEL", "None")
    assert WorkerSettings().image_model is None and load_image_classifier(WorkerSettings()) is None

    build_tiny_image_bundle(tmp_path / "models" / "cxr-pneumonia", version="9.9.9")
    monkeypatch.setenv("MEDROUTE_IMAGE_MODEL", "cxr-pneumonia@9.9.9")
    classifier = load_image_classifier(WorkerSettings())
    assert classifier is not None and classifier.ref == "cxr-pneumonia@9.9.9"
    assert classifier.labels == ["normal", "pneumonia"]

    monkeypatch.setenv("MEDROUTE_IMAGE_MODEL", "doctype-en")  # a bundle, but not an image model
    with pytest.raises(StartupError, match="cannot load image model 'doctype-en'"):
        load_image_classifier(WorkerSettings())


def test_the_worker_pool_is_named_by_its_app_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_WORKER_APP_ID", "medroute-worker-site-b")
    app = create_app(KafkaSettings(bootstrap="127.0.0.1:1"), WorkerSettings())
    assert app.conf.id == "medroute-worker-site-b"
