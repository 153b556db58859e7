import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from helpers import photo
from iqa.cli import main
from iqa.data.datasets import load_dataset
from iqa.data.splits import make_splits, save_splits
from iqa.evaluate import EvaluationError, evaluate
from iqa.images import ImageError

METRIC_FIELDS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse")
BLURS = (0, 1, 2, 3)  # Gaussian radius per level; MOS falls as blur grows


def _strict_json(text: str) -> dict:
    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


def _make_dataset(root: Path, contents: int = 2, blurs=BLURS, size=(128, 96), broken: bool = False) -> Path:
    """Generic layout: blurred versions of `contents` crops of a photo, meta.csv with
    image, mos, distortion, group columns."""
    root.mkdir(parents=True, exist_ok=True)
    big = Image.fromarray(photo(size[0] * 2, size[1]))
    rows = []
    for c in range(contents):
        base = big.crop((c * size[0], 0, (c + 1) * size[0], size[1]))
        for level, radius in enumerate(blurs):
            name = f"c{c}_blur{level}.png"
            (base.filter(ImageFilter.GaussianBlur(radius)) if radius else base).save(root / name)
            rows.append((name, 10 - 2 * level, "blur" if level % 2 else "sharpish", f"c{c}"))
    if broken:
        (root / "broken.png").write_bytes(b"garbage")
        rows.append(("broken.png", 5, "blur", "cx"))
    with (root / "meta.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mos", "distortion", "group"])
        writer.writerows(rows)
    return root


def _sharpness(path: Path) -> float:
    """A stand-in scorer: mean absolute horizontal gradient (blur lowers it)."""
    try:
        a = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    except OSError as err:
        raise ImageError(f"{path}: unreadable ({err})") from None
    return float(np.abs(np.diff(a, axis=1)).mean())


def test_evaluate_function_groups_and_failures(tmp_path):
    data = load_dataset(_make_dataset(tmp_path / "d", broken=True), "generic")
    result = evaluate(_sharpness, data.records, method="sharpness", by="distortion", root=data.root,
                      progress=False)
    assert result.n == 8 and result.correlations.srcc > 0.9  # sharpness ranks the blur levels
    assert [f.image for f in result.failures] == ["broken.png"]
    assert set(result.groups) == {"blur", "sharpish"} and result.groups["blur"].n == 4
    assert {p.image for p in result.predictions} >= {"c0_blur0.png", "c1_blur3.png"}
    d = result.to_dict(include_predictions=True)
    _strict_json(json.dumps(d))
    assert d["failed"] == 1 and len(d["predictions"]) == 8 and any("[0, 1]" in n for n in d["notes"])


def test_evaluate_small_groups_and_too_few(tmp_path):
    data = load_dataset(_make_dataset(tmp_path / "d", contents=2, blurs=(0, 1)), "generic")
    result = evaluate(_sharpness, data.records, by="group", progress=False)  # Record.group: 2 images each
    assert result.n == 4 and result.groups == {}
    assert sum("fewer than" in n for n in result.notes) == 2
    result = evaluate(_sharpness, data.records, by="camera", progress=False)
    assert result.groups == {} and any("no record has a 'camera'" in n for n in result.notes)
    with pytest.raises(EvaluationError, match="at least 3"):
        evaluate(_sharpness, data.records[:2], progress=False)


def test_cli_brisque_json_out_predictions(tmp_path, capsys):
    root = _make_dataset(tmp_path / "d", broken=True)
    out, pred = tmp_path / "res.json", tmp_path / "pred.csv"
    status = main(["evaluate", "--model", "brisque", "--data", str(root), "--format", "generic",
                   "--by", "distortion", "--out", str(out), "--predictions", str(pred)])
    captured = capsys.readouterr()
    assert status == 0
    d = _strict_json(captured.out)
    assert d == _strict_json(out.read_text())
    assert d["method"] == "BRISQUE" and d["n"] == 8 and d["failed"] == 1
    assert all(isinstance(d["metrics"][k], float) for k in METRIC_FIELDS)
    assert d["metrics"]["srcc"] > 0  # BRISQUE sees the blur
    assert set(d["groups"]) == {"blur", "sharpish"}
    assert "broken.png" in captured.err
    with pred.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 and rows[-1]["error"] and float(rows[0]["target"]) == 1.0


def test_cli_split_part_selection(tmp_path, capsys):
    root = _make_dataset(tmp_path / "d", contents=2, blurs=(0, 1, 2, 3, 4))
    splits = make_splits(load_dataset(root, "generic"), "1:1", count=2, seed=0)
    split_file = save_splits(splits, tmp_path / "splits.json")
    expected = splits.splits[1]["test"]
    assert main(["evaluate", "--model", "brisque", "--split-file", str(split_file), "--split-index", "1"]) == 0
    d = _strict_json(capsys.readouterr().out)
    assert d["n"] == len(expected) == 5 and d["split"] == {"file": str(split_file), "index": 1, "part": "test"}
    assert main(["evaluate", "--model", "brisque", "--data", str(root), "--format", "generic",
                 "--split-file", str(split_file), "--split-index", "5"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_cli_tiny_model(tmp_path, capsys):
    root = _make_dataset(tmp_path / "d", contents=1, blurs=(0, 2, 4), size=(64, 48))
    status = main(["evaluate", "--preset", "tiny", "--data", str(root), "--format", "generic",
                   "--crops", "1", "--steps", "2", "--device", "cpu"])
    d = _strict_json(capsys.readouterr().out)
    assert status == 0 and d["n"] == 3 and d["crops"] == 1 and d["steps"] == 2
    assert "tiny" in d["method"] and set(METRIC_FIELDS) <= set(d["metrics"])


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["evaluate", "--model", "niqe", "--data", str(tmp_path), "--format", "generic"]) == 2
    assert "meta.csv" in capsys.readouterr().err
    assert main(["evaluate", "--model", "niqe"]) == 2
    assert "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: a method is required
        main(["evaluate", "--data", str(tmp_path)])


def test_cli_too_few_scored_exit_1_names_files(tmp_path, capsys):
    root = _make_dataset(tmp_path / "d", contents=1, size=(64, 48))  # below NIQE's 96 px patch
    assert main(["evaluate", "--model", "niqe", "--data", str(root)]) == 1  # format detected
    err = capsys.readouterr().err
    assert "c0_blur0.png" in err and "at least 3" in err
