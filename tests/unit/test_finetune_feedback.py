"""``medroute finetune --feedback``: reviewers' corrections appended to the training data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medroute.records import Feedback
from tools.modelling import finetune
from tools.modelling.feedback import rows_of, with_feedback


def feedback(message_id: str, label: str, model: str = "doctype-en@1.0.0", text: str | None = "A report.") -> dict:
    return Feedback(message_id, "hl7", model, "letter", label, label == "letter", "rita", text).to_dict()


def test_latest_answer_per_message_of_the_model_with_text() -> None:
    records = [
        feedback("m1", "office_note"),
        {"topic": "feedback", "value": feedback("m1", "progress_note")},  # `medroute tail` line, later answer
        feedback("m2", "letter", model="triage-zh@1.0.0"),  # another model's decision
        feedback("m3", "letter", text=None),  # no text (an image, or an ADT message)
        feedback("m4", "discharge_summary"),
    ]
    assert rows_of(records, "doctype-en") == [
        ("feedback-m1", "A report.", "progress_note"),
        ("feedback-m4", "A report.", "discharge_summary"),
    ]


def test_training_csv_gets_the_corrections(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("id,text,label\na,An office note.,office_note\n", encoding="utf-8")
    source = tmp_path / "feedback.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in [feedback("m1", "letter"), feedback("m1", "letter")]) + "\n")
    merged, added = with_feedback(train, str(source), "doctype-en", tmp_path / "out" / "merged.csv")
    assert added == 1
    with merged.open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["id", "text", "label"],
            ["a", "An office note.", "office_note"],
            ["feedback-m1", "A report.", "letter"],
        ]


def test_feedback_flag_points_training_at_the_merged_copy(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("id,text,label\na,An office note.,office_note\n", encoding="utf-8")
    source = tmp_path / "feedback.jsonl"
    source.write_text(json.dumps(feedback("m9", "letter")) + "\n")
    args = finetune.build_parser().parse_args(
        [
            "--model-type",
            "text",
            "--train-data",
            str(train),
            "--eval-data",
            str(train),
            "--output-dir",
            str(tmp_path / "doctype-en-2"),
            "--name",
            "doctype-en",
            "--feedback",
            str(source),
        ]
    )
    finetune.add_feedback(args)
    assert args.train_data == str(tmp_path / "doctype-en-2.train-with-feedback.csv")
    assert "feedback-m9" in Path(args.train_data).read_text(encoding="utf-8")


def test_image_feedback_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "x.npz"
    data.write_bytes(b"")
    code = finetune.main(
        [
            "--model-type",
            "image",
            "--train-data",
            str(data),
            "--eval-data",
            str(data),
            "--output-dir",
            str(tmp_path / "o"),
            "--feedback",
        ]
    )
    assert code == 2 and "--feedback" in capsys.readouterr().err
