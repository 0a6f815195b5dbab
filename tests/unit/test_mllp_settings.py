"""Environment variables of the MLLP listener."""

from __future__ import annotations

import pytest

from listeners.mllp.settings import MllpSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HOST",
        "PORT",
        "IDLE_TIMEOUT",
        "MAX_FRAME",
        "STRICT",
        "DEDUP_WINDOW",
        "DEFAULT_CHARSET",
        "TLS_CERT",
        "TLS_KEY",
        "TLS_CA",
        "STORE_TIMEOUT",
    ):
        monkeypatch.delenv(f"MEDROUTE_MLLP_{name}", raising=False)
    s = MllpSettings()
    assert (s.host, s.port, s.idle_timeout, s.max_frame) == ("127.0.0.1", 2575, 300.0, 16 * 1024 * 1024)
    assert (s.strict, s.dedup_window, s.default_charset, s.store_timeout) == (False, 600.0, "ASCII", 5.0)
    assert s.ssl_context() is None


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_MLLP_HOST", "0.0.0.0")
    monkeypatch.setenv("MEDROUTE_MLLP_PORT", "6661")
    monkeypatch.setenv("MEDROUTE_MLLP_IDLE_TIMEOUT", "30")
    monkeypatch.setenv("MEDROUTE_MLLP_MAX_FRAME", "1048576")
    monkeypatch.setenv("MEDROUTE_MLLP_STRICT", "1")
    monkeypatch.setenv("MEDROUTE_MLLP_DEDUP_WINDOW", "60")
    monkeypatch.setenv("MEDROUTE_MLLP_DEFAULT_CHARSET", "UNICODE UTF-8")
    s = MllpSettings()
    assert (s.host, s.port, s.idle_timeout, s.max_frame) == ("0.0.0.0", 6661, 30.0, 1048576)
    assert (s.strict, s.dedup_window, s.default_charset) == (True, 60.0, "UNICODE UTF-8")


def test_bad_values_stop_the_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_MLLP_DEFAULT_CHARSET", "KLINGON")
    with pytest.raises(SystemExit):
        MllpSettings()
    monkeypatch.delenv("MEDROUTE_MLLP_DEFAULT_CHARSET")
    monkeypatch.setenv("MEDROUTE_MLLP_TLS_CERT", "/x/cert.pem")
    with pytest.raises(SystemExit):
        MllpSettings()  # a certificate without its key
