"""``medroute batch`` on a mixed folder: every file gets a line, ok or with the reason it is not."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.registry import BundleNotFoundError, find_bundle
from shell.samples import REPORTS
from tools.operations.batch import main
from tools.operations.batch_inputs import InputError, decode_text, kind_of, language_of

HL7_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
CHINESE = "患者男性，六十岁，咳嗽咳痰一周，伴发热及胸闷气短。听诊双肺可闻及湿啰音，胸片提示右下肺炎。"


def image_model_installed() -> bool:
    try:
        find_bundle("cxr-pneumonia")
    except BundleNotFoundError:
        return False
    return True


def write_pdf(path: Path, text: str | None) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    if text is None:
        pdf.rect(20, 20, 100, 60, style="F")  # a drawing, no text layer: what a scan looks like to pypdf
    else:
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    pydicom_data = pytest.importorskip("pydicom.data")
    folder = tmp_path / "in"
    (folder / "notes").mkdir(parents=True)
    (folder / "report-en.txt").write_text(REPORTS["radiology"][0], encoding="utf-8")
    (folder / "notes" / "report-zh.txt").write_text(CHINESE, encoding="utf-8")
    write_pdf(folder / "discharge.pdf", REPORTS["discharge"][0])
    write_pdf(folder / "scanned.pdf", None)
    shutil.copy(HL7_FIXTURES / "oru_r01_radiology.hl7", folder / "oru.hl7")
    shutil.copy(HL7_FIXTURES / "adt_a01.hl7", folder / "adt.hl7")
    shutil.copy(pydicom_data.get_testdata_file("RG1_UNCI.dcm"), folder / "chest.dcm")
    ct = Path(pydicom_data.get_testdata_file("CT_small.dcm"))
    shutil.copy(ct, folder / "ct.dcm")
    (folder / "cut-in-header.dcm").write_bytes(ct.read_bytes()[:3000])
    (folder / "cut-in-pixels.dcm").write_bytes(ct.read_bytes()[: ct.stat().st_size * 2 // 3])
    gradient = (np.linspace(0, 255, 128 * 128).reshape(128, 128)).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "xray.png")
    (folder / "garbage.txt").write_bytes(random.Random(3).randbytes(4096))
    (folder / "empty.txt").write_bytes(b"")
    return folder


def run_batch(folder: Path, out: Path, *extra: str) -> tuple[dict[str, dict], dict]:
    assert main(["--input-dir", str(folder), "--output-dir", str(out), "--no-progress", *extra]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    with (out / "results.csv").open(encoding="utf-8", newline="") as stream:
        assert [row["file"] for row in csv.DictReader(stream)] == [row["file"] for row in rows]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    by_file = {row["file"]: row for row in rows}
    assert len(by_file) == len(rows)
    return by_file, summary


def test_every_file_gets_a_line_with_a_label_or_a_reason(mixed_folder: Path, tmp_path: Path) -> None:
    rows, summary = run_batch(mixed_folder, tmp_path / "out")
    files = sorted(p.relative_to(mixed_folder).as_posix() for p in mixed_folder.rglob("*") if p.is_file())
    assert sorted(rows) == files

    def assert_ok(name: str, kind: str, model: str) -> None:
        row = rows[name]
        assert (row["kind"], row["status"], row["model"].split("@")[0]) == (kind, "ok", model), row
        assert row["label"] in row["scores"] and 0 < row["confidence"] <= 1

    assert_ok("report-en.txt", "text", "doctype-en")
    assert rows["report-en.txt"]["label"] == "radiology_report"
    assert_ok("notes/report-zh.txt", "text", "triage-zh")
    assert rows["notes/report-zh.txt"]["language"] == "zh"
    assert_ok("discharge.pdf", "pdf", "doctype-en")
    assert rows["discharge.pdf"]["label"] == "discharge_summary"
    assert_ok("oru.hl7", "hl7", "doctype-en")
    assert rows["oru.hl7"]["note"].startswith("ORU^R01")

    def assert_not(name: str, kind: str, status: str, reason: str) -> None:
        row = rows[name]
        assert (row["kind"], row["status"]) == (kind, status), row
        assert reason in row["reason"], row["reason"]
        assert row["label"] is None

    assert_not("adt.hl7", "hl7", "unclassifiable", "without clinical text")
    assert_not("scanned.pdf", "pdf", "unclassifiable", "without a text layer")
    assert_not("ct.dcm", "dicom", "unclassifiable", "not a frontal chest radiograph (CT")
    assert_not("cut-in-header.dcm", "dicom", "failed", "truncated")
    assert_not("cut-in-pixels.dcm", "dicom", "failed", "DICOM")
    assert_not("garbage.txt", "text", "failed", "binary content")
    assert_not("empty.txt", "text", "failed", "empty file")
    for name, kind in (("chest.dcm", "dicom"), ("xray.png", "image")):
        if image_model_installed():
            assert_ok(name, kind, "cxr-pneumonia")
        else:
            assert_not(name, kind, "failed", "model cxr-pneumonia cannot be loaded")
    assert rows["chest.dcm"]["note"] == "CR CHEST PA, frame 1 of 1"

    statuses = [row["status"] for row in rows.values()]
    assert summary["files"] == len(files)
    assert {s: summary[s] for s in ("ok", "unclassifiable", "failed")} == {
        s: statuses.count(s) for s in ("ok", "unclassifiable", "failed")
    }
    for kind in {row["kind"] for row in rows.values()}:
        expected = {
            s: n for s in set(statuses) if (n := sum(r["kind"] == kind and r["status"] == s for r in rows.values()))
        }
        assert summary["by_kind"][kind] == expected
    labels = [(r["model"], r["label"]) for r in rows.values() if r["status"] == "ok"]
    assert sum(sum(counts.values()) for counts in summary["by_label"].values()) == len(labels)
    assert {f["file"] for f in summary["failures"]} == {n for n, r in rows.items() if r["status"] == "failed"}
    assert {f["file"] for f in summary["unclassifiable_files"]} == {
        n for n, r in rows.items() if r["status"] == "unclassifiable"
    }


def test_task_and_forced_model_limit_what_is_classified(mixed_folder: Path, tmp_path: Path) -> None:
    rows, _ = run_batch(mixed_folder, tmp_path / "text", "--task", "text_classification")
    assert (
        rows["xray.png"]["status"] == "unclassifiable" and "task is text_classification" in rows["xray.png"]["reason"]
    )
    assert rows["report-en.txt"]["model"].startswith("doctype-en@")

    rows, _ = run_batch(mixed_folder, tmp_path / "forced", "--model", "triage-zh")
    assert rows["report-en.txt"]["model"].startswith("triage-zh@")  # forced, whatever the language
    assert rows["chest.dcm"]["status"] == "unclassifiable" and "triage-zh takes text" in rows["chest.dcm"]["reason"]


def test_a_model_that_does_not_fit_the_task_is_refused(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    args = ["--input-dir", str(mixed_folder), "--output-dir", str(out), "--no-progress"]
    assert main([*args, "--task", "image_classification", "--model", "doctype-en"]) == 2
    assert main([*args, "--model", "no-such-model"]) == 2


def test_output_inside_the_input_is_not_read_back(mixed_folder: Path) -> None:
    rows, _ = run_batch(mixed_folder, mixed_folder / "results")
    assert not any(name.startswith("results/") for name in rows)


def test_kinds_languages_and_text_decoding() -> None:
    assert kind_of(Path("a.txt"), b"\x00" * 128 + b"DICM") == "dicom"
    assert kind_of(Path("a.bin"), b"%PDF-1.7") == "pdf"
    assert kind_of(Path("a.txt"), b"\x0bMSH|^~\\&|") == "hl7"
    assert kind_of(Path("a.dcm"), b"short") == "dicom"
    assert kind_of(Path("notes"), b"plain words") == "text"
    assert language_of(CHINESE) == "zh" and language_of("胸部CT示右肺上叶结节，建议3个月后复查CT。") == "zh"
    assert language_of("Patient 王小明 seen today for a follow-up of the nodule in the right lung.") == "en"
    assert language_of(REPORTS["letter"][0]) == "en"
    assert decode_text(CHINESE.encode("gb18030")) == CHINESE
    assert decode_text("café".encode("utf-16")) == "café"  # with its byte order mark
    with pytest.raises(InputError, match="binary"):
        decode_text(bytes(range(256)) * 4)


def write_image_bundle(directory: Path, name: str = "cxr-pneumonia") -> Path:
    """A tiny image bundle (a fixed linear layer on 16x16 pixels) under ``directory/name``: it stands in
    for the real chest model, so the image path of batch is tested whether that bundle is installed or not."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from models.bundle import write_manifest

    bundle = directory / name
    bundle.mkdir(parents=True)
    weight = np.stack([np.linspace(-1, 1, 256), np.linspace(1, -1, 256)], axis=1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 16, 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, bundle / "model.onnx")
    manifest = {
        "name": name,
        "version": "0.0.1",
        "task": "image_classification",
        "input_kind": "image",
        "labels": ["normal", "pneumonia"],
        "default_threshold": 0.5,
        "preprocessing": {"size": 16, "channels": 1},
    }
    write_manifest(bundle, manifest)
    return bundle


def test_chest_radiographs_and_pictures_go_to_the_image_model(
    mixed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image_bundle(tmp_path / "models")
    monkeypatch.setenv("MEDROUTE_MODELS_DIR", str(tmp_path / "models"))
    rows, summary = run_batch(mixed_folder, tmp_path / "out")
    for name, kind in (("chest.dcm", "dicom"), ("xray.png", "image")):
        row = rows[name]
        assert (row["kind"], row["status"], row["model"]) == (kind, "ok", "cxr-pneumonia@0.0.1"), row
        assert row["label"] in ("normal", "pneumonia") and set(row["scores"]) == {"normal", "pneumonia"}
    assert rows["ct.dcm"]["status"] == "unclassifiable"  # not a chest radiograph: no model, even with one installed
    assert sum(summary["by_label"]["cxr-pneumonia@0.0.1"].values()) == 2
