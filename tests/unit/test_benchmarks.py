"""The benchmarks' shared helpers and the decide-only benchmark on a few records (no Kafka)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from formats.hl7.record import record_of_bytes
from pipeline.extract import extract_text
from tools.benchmarks import decide
from tools.benchmarks.common import CpuMeter, MessageSource, percentile, scratch_and_broker, with_note


def test_messages_are_unique_and_read_as_the_listener_reads_them() -> None:
    source = MessageSource(pool=40, seed=5)
    records = [record_of_bytes(source.message(n, f"Q-{n:05d}")) for n in range(120)]
    assert [r.control_id for r in records] == [f"Q-{n:05d}" for n in range(120)]
    texts = [extract_text(r).text for r in records]
    with_text = [t for t in texts if t]
    assert len(with_text) > 60
    assert len(set(with_text)) == len(with_text)  # the classifier's cache never answers for the model


def test_repeated_texts_keep_the_samples_reports() -> None:
    source = MessageSource(pool=40, seed=5, vary_texts=False)
    texts = {extract_text(record_of_bytes(source.message(n, f"Q-{n}"))).text for n in range(40)}
    assert len(texts) <= 20  # of some 30 messages with text: the same few reports, with or without a note


@pytest.mark.parametrize(("raw", "expected"), [
    (b"MSH|^~\\&|A\rPID|1\r", b"MSH|^~\\&|A\rPID|1\rNTE|1|L|Ref 1.\r"),
    (b"MSH#$%*!#A\r\nPID#1\r\n", b"MSH#$%*!#A\r\nPID#1\r\nNTE#1#L#Ref 1.\r\n"),
    (b"MSH|^~\\&|A\nPID|1\n", b"MSH|^~\\&|A\nPID|1\nNTE|1|L|Ref 1.\n"),
])  # fmt: skip
def test_a_note_uses_the_messages_own_delimiters(raw: bytes, expected: bytes) -> None:
    assert with_note(raw, b"Ref 1.") == expected


def test_percentile_and_cpu_meter() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([1.0, 2.0], 0.99) == 2.0
    meter = CpuMeter({"self": os.getpid()}).start()
    sum(range(200_000))
    cpu = meter.read()
    assert set(cpu) == {"self", "bench"} and cpu["bench"] >= 0


def test_a_benchmarks_scratch_directory_is_removed_even_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_KAFKA_BOOTSTRAP", "kafka.example:9092")  # a named cluster: no local broker
    with pytest.raises(RuntimeError), scratch_and_broker("medroute-test-scratch-") as (work, broker, bootstrap):
        assert broker is None and bootstrap == "kafka.example:9092"
        (work / "data").write_bytes(b"x" * 1024)
        raise RuntimeError("the benchmark failed")
    assert not work.exists()


def test_decide_benchmark_reports_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(decide, "pin_one_core", lambda: None)  # the test session keeps its CPUs
    out = tmp_path / "decide.json"
    argv = ["--records", "48", "--batch-size", "16", "--rounds", "1", "--fixtures", "--json", str(out)]
    assert decide.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| classifier alone (a) | 16 | 48 |" in printed
    assert "| full path (b) | 16 | 48 |" in printed
    figures = json.loads(out.read_text())
    assert [run["name"] for run in figures["runs"]] == ["classifier alone (a)", "full path (b)"]
    assert figures["runs"][1]["texts"] == figures["runs"][0]["texts"] > 0
