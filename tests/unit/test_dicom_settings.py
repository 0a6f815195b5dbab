"""DICOM listener settings from the environment."""

from __future__ import annotations

import pytest

from listeners.dicom.settings import DEFAULT_MAX_PDU, DicomSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEDROUTE_DICOM_PORT", "MEDROUTE_DICOM_AE_TITLE", "MEDROUTE_DICOM_ALLOWED_AES"):
        monkeypatch.delenv(name, raising=False)
    settings = DicomSettings()
    assert (settings.host, settings.port, settings.ae_title) == ("127.0.0.1", 11112, "MEDROUTE")
    assert settings.allowed_aes == () and settings.allowed_peers == ()
    assert settings.max_pdu == DEFAULT_MAX_PDU and settings.processes == 1 and settings.require_called_ae
    assert settings.ssl_context() is None
    assert settings.peer_allowed("192.0.2.7")


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_DICOM_PORT", "104")
    monkeypatch.setenv("MEDROUTE_DICOM_AE_TITLE", "ROUTER1")
    monkeypatch.setenv("MEDROUTE_DICOM_ALLOWED_AES", " CT01 , MR02,,US_3 ")
    monkeypatch.setenv("MEDROUTE_DICOM_ALLOWED_PEERS", "10.1.0.0/16, 192.0.2.7,::1")
    monkeypatch.setenv("MEDROUTE_DICOM_MAX_ASSOCIATIONS", "4")
    monkeypatch.setenv("MEDROUTE_DICOM_MAX_PDU", "0")
    monkeypatch.setenv("MEDROUTE_DICOM_PROCESSES", "2")
    monkeypatch.setenv("MEDROUTE_DICOM_STORE_TIMEOUT", "2.5")
    monkeypatch.setenv("MEDROUTE_DICOM_REQUIRE_CALLED_AE", "no")
    settings = DicomSettings()
    assert (settings.port, settings.ae_title) == (104, "ROUTER1")
    assert settings.allowed_aes == ("CT01", "MR02", "US_3")
    assert (settings.max_associations, settings.max_pdu, settings.processes) == (4, 0, 2)
    assert settings.store_timeout == 2.5 and not settings.require_called_ae
    assert settings.peer_allowed("10.1.200.3")
    assert settings.peer_allowed("192.0.2.7")
    assert settings.peer_allowed("::ffff:10.1.0.9")  # an IPv4 peer on a dual-stack socket
    assert settings.peer_allowed("::1")
    assert not settings.peer_allowed("10.2.0.1")
    assert not settings.peer_allowed("127.0.0.1")
    assert not settings.peer_allowed("not-an-address")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MEDROUTE_DICOM_AE_TITLE", "A_TITLE_LONGER_THAN_16", "MEDROUTE_DICOM_AE_TITLE"),
        ("MEDROUTE_DICOM_AE_TITLE", "BAD\\AE", "MEDROUTE_DICOM_AE_TITLE"),
        ("MEDROUTE_DICOM_ALLOWED_AES", "OK,WAY_TOO_LONG_FOR_AN_AE", "MEDROUTE_DICOM_ALLOWED_AES"),
        ("MEDROUTE_DICOM_ALLOWED_PEERS", "10.0.0.0/8,hospital.example", "MEDROUTE_DICOM_ALLOWED_PEERS"),
        ("MEDROUTE_DICOM_PROCESSES", "0", "MEDROUTE_DICOM_PROCESSES"),
        ("MEDROUTE_DICOM_MAX_ASSOCIATIONS", "0", "MEDROUTE_DICOM_MAX_ASSOCIATIONS"),
        ("MEDROUTE_DICOM_MAX_PDU", "1024", "MEDROUTE_DICOM_MAX_PDU"),
        ("MEDROUTE_DICOM_STORE_TIMEOUT", "0", "MEDROUTE_DICOM_STORE_TIMEOUT"),
        ("MEDROUTE_DICOM_PORT", "eleven", "MEDROUTE_DICOM_PORT"),
        ("MEDROUTE_DICOM_TLS_CERT", "/some/cert.pem", "MEDROUTE_DICOM_TLS_KEY"),
    ],
)
def test_bad_values_stop_start_up(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        DicomSettings()
