import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import photo
from iqa import assess
from iqa.cli import main
from iqa.score import ScoreRow, collect_images, format_table, parse_bf16, rows_to_json, write_csv

REPO = Path(__file__).resolve().parent.parent
FAST = ["--preset", "tiny", "--crops", "1", "--steps", "2", "--device", "cpu"]  # untrained: plumbing only


def _save(path: Path, w: int = 64, h: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(w, h)).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    """a.png, b.jpg, sub/c.png, a broken bad.png and a non-image notes.txt."""
    _save(tmp_path / "a.png")
    _save(tmp_path / "b.jpg")
    _save(tmp_path / "sub" / "c.png")
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def _names(paths):
    return [p.name for p in paths]


def test_collect_folder_sorted_images_only(images):
    got = collect_images([images])
    assert _names(got.files) == ["a.png", "b.jpg", "bad.png"]
    assert collect_images([images], recursive=True).files[-1].name == "c.png"


def test_collect_glob_and_files_dedupe_keep_missing(images):
    got = collect_images([str(images / "*.png"), images / "a.png", images / "missing.png"])
    assert _names(got.files) == ["a.png", "bad.png", "missing.png"]
    assert not got.warnings
    got = collect_images([str(images / "**" / "*.png")])
    assert "c.png" in _names(got.files)


def test_collect_warns_on_empty_inputs(images):
    got = collect_images([str(images / "*.gif")])
    assert any("no image files match" in w for w in got.warnings)
    empty = images / "empty"
    (empty / "deeper").mkdir(parents=True)
    got = collect_images([empty])
    assert got.files == [] and "-r" in got.warnings[0]


def test_outputs_render_rows(tmp_path):
    rows = [ScoreRow("x.png", 0.5, 0.3, 0.2, 1.25, notices=["upscaled", "rotated"]),
            ScoreRow("a-much-longer-name.png", error="a-much-longer-name.png: broken")]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["file", "score", "S1", "S2", "seconds"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert "0.5000" in lines[1] and "failed" in lines[2]
    data = json.loads(rows_to_json(rows))
    assert data[1]["error"].endswith("broken") and data[1]["score"] is None
    with write_csv(rows, tmp_path / "out.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert table[0]["notices"] == "upscaled; rotated" and table[1]["score"] == ""


def test_score_json_with_bad_file(images, capsys):
    status = main(["score", str(images / "a.png"), str(images / "b.*"), str(images / "bad.png"), "--json", *FAST])
    captured = capsys.readouterr()
    assert status == 1
    rows = json.loads(captured.out)
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.jpg", "bad.png"]
    for r in rows[:2]:
        assert r["error"] is None and 0 <= r["score"] and r["s1"] is not None and r["seconds"] > 0
        assert any("upscaled" in n for n in r["notices"])
    assert rows[2]["score"] is None and "bad.png" in rows[2]["error"]
    assert "bad.png" in captured.err and "upscaled" in captured.err


def test_score_csv_from_folder(tmp_path, capsys):
    _save(tmp_path / "imgs" / "one.png")
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")
    out = tmp_path / "scores.csv"
    status = main(["score", str(tmp_path / "imgs"), "--csv", str(out), *FAST])
    captured = capsys.readouterr()
    assert status == 1 and "one.png" in captured.out  # the table is printed too
    with out.open() as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert float(rows["one.png"]["score"]) >= 0 and rows["one.png"]["error"] == ""
    assert "empty" in rows["empty.png"]["error"]


def test_usage_errors_exit_2(tmp_path, capsys, monkeypatch):
    assert main(["score", str(tmp_path / "*.png"), *FAST]) == 2
    assert "no images found" in capsys.readouterr().err
    img = _save(tmp_path / "x.png")
    assert main(["score", str(img), "--crops", "-1", *FAST[:2]]) == 2
    assert main(["score", str(img), "--diffusion-scale", "0", *FAST[:2]]) == 2
    assert "--diffusion-scale must be at least 1" in capsys.readouterr().err
    assert main(["score", str(img), "--full-res-steps", "-1", *FAST[:2]]) == 2
    assert "--full-res-steps must be at least 0" in capsys.readouterr().err
    monkeypatch.setattr(assess, "DEFAULT_CHECKPOINT", tmp_path / "no-checkpoint")
    assert main(["score", str(img)]) == 2
    assert "default checkpoint is missing" in capsys.readouterr().err


def test_python_m_iqa_score(tmp_path):
    img = _save(tmp_path / "photo.png")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "iqa", "score", str(img), *FAST], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.strip().splitlines()
    assert header.split() == ["file", "score", "S1", "S2", "seconds"]
    assert row.split()[0].endswith("photo.png") and float(row.split()[1]) >= 0


def test_parse_bf16_option():
    assert parse_bf16("auto") is None  # the assessor's default for the device
    assert parse_bf16("none") == ()
    assert parse_bf16("diffusion, backbones") == ("diffusion", "backbones")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown stage"):
        parse_bf16("vcg,heads")
