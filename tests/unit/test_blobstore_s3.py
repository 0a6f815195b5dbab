"""The S3 blob store's client asks no address nobody configured (the store itself is tested against moto's
S3 server in tests/integration/test_blobstore_s3.py)."""

from __future__ import annotations

import pytest
from botocore.utils import InstanceMetadataFetcher

from medroute.blobstore_s3 import S3BlobStore

KEY = bytes(range(32))


@pytest.fixture
def metadata_asked(monkeypatch, tmp_path) -> list[str]:
    """No credentials anywhere but the instance metadata, whose lookups are recorded instead of made."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    asked: list[str] = []
    monkeypatch.setattr(InstanceMetadataFetcher, "retrieve_iam_role_credentials", lambda _: asked.append("iam") or {})
    return asked


def test_instance_metadata_is_not_asked_by_default(monkeypatch, metadata_asked):
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    S3BlobStore.from_env("s3://bucket/prefix", KEY)
    assert metadata_asked == []


def test_instance_metadata_is_asked_where_a_site_enables_it(monkeypatch, metadata_asked):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    S3BlobStore.from_env("s3://bucket/prefix", KEY)
    assert metadata_asked == ["iam"]
