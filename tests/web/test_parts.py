"""The web server's parts on their own: accounts, settings, the micro-batcher, the live state."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from medroute.config import FORWARD_STATUS
from medroute.records import Hl7Record, message_id_of
from web.batching import MicroBatcher
from web.live import Live
from web.settings import auth_enabled
from web.users import Accounts, AccountsError, Role, add_token, add_user


def test_users_file_and_tokens(tmp_path: Path) -> None:
    users, tokens = tmp_path / "users", tmp_path / "tokens"
    add_user(users, "alice", Role.reviewer, "correct horse")
    add_user(users, "alice", Role.admin, "battery staple")  # replaces the line
    token = add_token(tokens, "nightly", Role.viewer)
    assert users.read_text().count("alice:") == 1 and "$argon2id$" in users.read_text()
    assert oct(users.stat().st_mode & 0o777) == "0o600" and token not in tokens.read_text()
    accounts = Accounts.load(users, tokens, "root", "env-password")
    assert accounts.verify_password("alice", "battery staple").role is Role.admin  # type: ignore[union-attr]
    assert accounts.verify_password("alice", "correct horse") is None
    assert accounts.verify_password("nobody", "battery staple") is None
    assert accounts.verify_password("root", "env-password").role is Role.admin  # type: ignore[union-attr]
    assert accounts.verify_token(token).name == "nightly"  # type: ignore[union-attr]
    assert accounts.verify_token(token + "x") is None
    with pytest.raises(AccountsError, match="8 characters"):
        add_user(users, "bob", Role.viewer, "short")
    with pytest.raises(AccountsError, match="invalid account name"):
        add_user(users, "bob:admin", Role.viewer, "long enough")
    users.write_text("carol:superuser:$argon2id$x\n")
    with pytest.raises(AccountsError, match="users:1: unknown role"):
        Accounts.load(users, tokens)


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("true", True), ("false", False), ("0", False)])
def test_auth_is_on_unless_explicitly_off(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool) -> None:
    if value is None:
        monkeypatch.delenv("ENABLE_AUTH", raising=False)
    else:
        monkeypatch.setenv("ENABLE_AUTH", value)
    assert auth_enabled() is expected


def test_a_typo_does_not_turn_auth_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENABLE_AUTH", "flase")
    with pytest.raises(SystemExit, match="ENABLE_AUTH"):
        auth_enabled()


async def test_requests_that_arrive_together_share_one_call() -> None:
    calls: list[list[int]] = []

    def process(items: list[int]) -> list[int]:
        calls.append(items)
        return [item * 2 for item in items]

    batcher = MicroBatcher(process, ThreadPoolExecutor(1), max_batch=8)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(10)))
    assert results == [n * 2 for n in range(10)]
    assert calls == [list(range(8)), [8, 9]]  # all arrived before the first call ran: two calls of at most 8


async def test_a_failing_batch_fails_its_callers() -> None:
    def process(items: list[int]) -> list[int]:
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        await MicroBatcher(process, ThreadPoolExecutor(1)).submit(1)


def test_message_id_of_a_stored_record() -> None:
    record = Hl7Record("abc123", b"MSH|", "", "ascii", "", "", "", "", "", "", "ORU^R01", "1", "2.5")
    assert message_id_of(record.to_json()) == "abc123"
    assert message_id_of(b'{"raw": "x", "message_id": "late"}') == "late"
    assert message_id_of(b"not json") is None


def test_live_queries() -> None:
    live = Live(None, recent=100)

    def decision(message_id: str, label: str, destinations: list[str], at: str) -> dict:
        return {"message_id": message_id, "label": label, "destinations": destinations, "decided_at": at}

    live._decision(decision("a", "letter", ["ehr-inbox"], "2026-01-01T10:00:01+00:00"), fresh=False)
    live._decision(decision("b", "letter", ["review-queue"], "2026-01-01T10:00:30+00:00"), fresh=False)
    live._decision(decision("c", "office_note", ["review-queue"], "2026-01-01T10:01:00+00:00"), fresh=False)
    live.feedback["c"] = {"label": "letter"}
    # A redrive sends b's decision again to one destination: not a decision of its own, b stays for review.
    live._decision({**decision("b", "letter", ["ehr-inbox"], "2026-01-01T10:05:00+00:00"), "redrive_id": "0-7"}, True)
    assert [d["message_id"] for d in live.review_queue()] == ["b"]
    assert [d["message_id"] for d in live.find_decisions(label="letter")] == ["b", "a"]
    assert [d["message_id"] for d in live.find_decisions(since="2026-01-01T10:00:30")] == ["c", "b"]
    assert live.counts() == [
        {
            "minute": "2026-01-01T10:00",
            "total": 2,
            "labels": {"letter": 2},
            "destinations": {"ehr-inbox": 1, "review-queue": 1},
        },
        {"minute": "2026-01-01T10:01", "total": 1, "labels": {"office_note": 1}, "destinations": {"review-queue": 1}},
    ]


def test_live_keeps_each_destinations_latest_snapshot() -> None:
    live = Live(None, recent=100)

    def take(key: bytes | None, value: object) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        live._take(SimpleNamespace(topic=FORWARD_STATUS, key=key, value=raw, partition=0, offset=0), fresh=True)

    take(b"pacs", {"destination": "pacs", "delivered": 3, "at": 100.0})
    take(b"pacs", {"destination": "pacs", "delivered": 9, "at": 102.5})
    take(b"ehr", {"destination": "ehr", "delivered": 1, "at": 101})
    take(b"junk", b"not json")
    take(b"odd", {"delivered": 1})  # not a forwarder's snapshot: no time
    take(None, {"at": 1.0})
    assert {name: snap["delivered"] for name, snap in live.destinations.items()} == {"pacs": 9, "ehr": 1}


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/review/abc", "/review/abc"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://x", "/"),
        (None, "/"),
    ],
)
def test_login_returns_only_to_this_site(target: str | None, safe: str) -> None:
    from web.pages import _safe_next

    assert _safe_next(target) == safe
