import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa.assess import Assessor
from iqa.cache import STATES_DIR, DiffusionCache
from iqa.checkpoint import save_checkpoint
from iqa.cli import main as cli_main
from iqa.data.datasets import load_dataset
from iqa.data.splits import load_splits, make_splits, save_splits
from iqa.report import (CHECKS_FAILED, kind_level_oracle, method_result, monotone_kinds, monotonicity,
                        peer_predictions, read_predictions, restoration)
from tests.helpers import photo, tiny_model

KINDS, LEVELS, PHOTOS = ("blur", "noise"), (1, 2, 3), ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Generic layout with refs, distortion and level columns; mos falls with the level."""
    root = tmp_path_factory.mktemp("rep")
    (root / "images").mkdir()
    (root / "refs").mkdir()
    lines = ["image,ref,group,distortion,level,mos"]
    rng = np.random.default_rng(0)
    for p, name in enumerate(PHOTOS):
        ref = photo(240, 232)
        Image.fromarray(ref).save(root / "refs" / f"{name}.png")
        for kind in KINDS:
            for level in LEVELS:
                img = np.clip(ref + rng.normal(0, 5 * level, ref.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / "images" / f"{name}_{kind}_{level}.png")
                lines.append(f"images/{name}_{kind}_{level}.png,refs/{name}.png,{name},{kind},{level},"
                             f"{1 - 0.2 * level - 0.01 * p:.3f}")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root


def test_monotonicity_counts_adjacent_level_pairs(data):
    ds = load_dataset(data, "generic")
    perfect = {ds.relative(r.image): -int(r.extra["level"]) for r in ds.records}
    share, n = monotonicity(ds.records, perfect, ds.relative)
    assert share == 1.0 and n == len(PHOTOS) * len(KINDS) * (len(LEVELS) - 1)
    rising = {k: -v for k, v in perfect.items()}
    assert monotonicity(ds.records, rising, ds.relative)[0] == 0.0
    m = method_result("oracle", ds.records, {ds.relative(r.image): r.mos for r in ds.records}, ds.relative)
    assert m.overall.srcc == pytest.approx(1.0) and set(m.by_kind) == set(KINDS)
    assert m.monotone_kinds_share == 1.0 and m.monotone_kinds_pairs == n


def test_monotonicity_counts_every_crop_of_a_photo(data):
    """Two crops of one photo share a group but not a reference: both level series count."""
    ds = load_dataset(data, "generic")
    second = [dataclasses.replace(r, image=r.image.with_name("c1_" + r.image.name),
                                  ref=r.ref.with_name("c1_" + r.ref.name)) for r in ds.records]
    records = ds.records + second
    perfect = {ds.relative(r.image): -int(r.extra["level"]) for r in records}
    share, n = monotonicity(records, perfect, ds.relative)
    assert share == 1.0 and n == 2 * len(PHOTOS) * len(KINDS) * (len(LEVELS) - 1)


def test_monotone_kinds_leave_out_kinds_whose_labels_rise(data):
    ds = load_dataset(data, "generic")
    assert monotone_kinds(ds.records, ds.relative) == set(KINDS)
    # one "noise" sequence whose label rises at one step makes "noise" non-monotone
    r = next(r for r in ds.records if r.extra["distortion"] == "noise" and int(r.extra["level"]) == 3)
    bumped = [dataclasses.replace(x, mos=5.0) if x is r else x for x in ds.records]
    assert monotone_kinds(bumped, ds.relative) == {"blur"}
    perfect = {ds.relative(x.image): -int(x.extra["level"]) for x in ds.records}
    share, pairs = monotonicity(ds.records, perfect, ds.relative, {"blur"})
    assert share == 1.0 and pairs == len(PHOTOS) * (len(LEVELS) - 1)


def test_kind_level_oracle_knows_the_distortion_but_not_the_content(data):
    ds = load_dataset(data, "generic")
    train = [r for r in ds.records if r.group in PHOTOS[:3]]
    test = [r for r in ds.records if r.group not in PHOTOS[:3]]
    # labels here fall with the level and barely depend on the photo (ties between photos aside)
    assert kind_level_oracle(train, test) > 0.9
    # a content term that outweighs the level: the oracle, blind to content, drops far below 1
    shifted = [dataclasses.replace(r, mos=r.mos + (1.0 if r.group == PHOTOS[3] else 0.0)) for r in test]
    assert kind_level_oracle(train, shifted) < 0.5
    no_kinds = [dataclasses.replace(r, extra={}) for r in test]
    assert np.isnan(kind_level_oracle(train, no_kinds))


def test_report_command_from_run_metrics(data, tmp_path):
    ds = load_dataset(data, "generic")
    split = tmp_path / "split.json"
    save_splits(make_splits(ds, "6:2:2", 1, seed=0), split)
    run = tmp_path / "run"
    run.mkdir()
    preds = [{"image": ds.relative(r.image), "mos": r.mos, "pred": r.mos + 0.01 * (i % 3)}
             for i, r in enumerate(ds.records)]
    (run / "metrics.json").write_text(json.dumps({"predictions": preds}))
    assert read_predictions(run)[preds[0]["image"]] == pytest.approx(preds[0]["pred"])
    out = tmp_path / "RESULTS.md"
    assert cli_main(["report", "--split-file", str(split), "--method", f"model={run}",
                     "--out", str(out), "--json", str(tmp_path / "r.json")]) == 0
    text = out.read_text()
    assert "| model |" in text and "not human opinion" in text and "| blur |" in text
    # on this set the level alone ranks the labels, so the report does not claim that content matters
    assert "told each test image's distortion kind and level" in text and "not enough" not in text
    assert "| BRISQUE |" in text and "| NIQE |" in text and (tmp_path / "niqe_test_predictions.csv").is_file()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["methods"][0]["name"] == "model"
    # on this plain-noise set BRISQUE is near-perfect too, so only the peer-margin check fails
    assert [c["passed"] for c in report["checks"]] == [True, False, True] and "Checks for **model**" in text
    # --require-checks: the near-perfect model passes, one whose score rises with the level fails
    common = ["report", "--split-file", str(split), "--out", str(out), "--require-checks", "--no-peers"]
    assert cli_main([*common, "--method", f"model={run}"]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text(json.dumps({"predictions": [{**p, "pred": -p["mos"]} for p in preds]}))
    assert cli_main([*common, "--method", f"bad={bad}"]) == CHECKS_FAILED
    assert "held-out SRCC" in out.read_text() and ": NO" in out.read_text()


def test_restoration_reads_the_training_cache(data, tmp_path):
    ds = load_dataset(data, "generic")
    model = tiny_model()
    save_checkpoint(model, tmp_path / "ck")
    records = ds.records[:2]
    cache = DiffusionCache(tmp_path / "cache" / STATES_DIR, Assessor(model, device="cpu"), crops=1)
    cache.fill([r.image for r in records], progress=False)
    row = restoration(str(tmp_path / "ck"), str(tmp_path / "cache"), 1, records, tmp_path / "fig.png")
    assert row.pairs == 2 and np.isfinite([row.psnr_distorted, row.psnr_restored, row.ssim_restored]).all()
    # the untrained residual network returns its input: y0 = x
    assert row.psnr_restored == pytest.approx(row.psnr_distorted)
    assert row.ssim_restored == pytest.approx(row.ssim_distorted)
    with pytest.raises(ValueError, match="at --crops 3: pass the --cache and --crops"):  # cache keyed on crops=1
        restoration(str(tmp_path / "ck"), str(tmp_path / "cache"), 3, records, None)


def test_peer_predictions_are_recomputed_when_the_images_change(data, tmp_path):
    ds = load_dataset(data, "generic")
    records = ds.records[:3]
    out = tmp_path / "brisque_test_predictions.csv"
    first = peer_predictions("brisque", records, ds.root, out, ds.relative)
    assert set(first) == {ds.relative(r.image) for r in records}
    out.write_text(out.read_text().replace(str(first[ds.relative(records[0].image)]), "12345"))
    assert peer_predictions("brisque", records, ds.root, out, ds.relative)[ds.relative(records[0].image)] == 12345
    # same names, other pixels (a rebuilt set): the stored numbers are not reused
    changed = tmp_path / "changed"
    changed.mkdir()
    for r in records:
        img = (255 - np.asarray(Image.open(r.image))) if r is records[0] else np.asarray(Image.open(r.image))
        (changed / ds.relative(r.image)).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(changed / ds.relative(r.image))
    moved = [dataclasses.replace(r, image=changed / ds.relative(r.image)) for r in records]
    again = peer_predictions("brisque", moved, changed, out, lambda p: str(Path(p).relative_to(changed)))
    assert again[ds.relative(records[0].image)] != 12345
    assert again[ds.relative(records[1].image)] == pytest.approx(first[ds.relative(records[1].image)], abs=1e-4)


def test_report_refuses_a_method_scored_on_other_images(data, tmp_path, capsys):
    """A run trained on another split has no predictions for part of this test part: comparing it on
    the subset it has would put numbers over different images side by side."""
    ds = load_dataset(data, "generic")
    split = tmp_path / "split.json"
    save_splits(make_splits(ds, "6:2:2", 1, seed=0), split)
    test = {ds.relative(r.image) for r in load_splits(split).part(0, "test")}
    run = tmp_path / "run"
    run.mkdir()
    preds = [{"image": ds.relative(r.image), "mos": r.mos, "pred": r.mos} for r in ds.records]
    partial = [p for p in preds if p["image"] != sorted(test)[0]]
    (run / "metrics.json").write_text(json.dumps({"predictions": partial}))
    args = ["report", "--split-file", str(split), "--method", f"model={run}", "--no-peers",
            "--out", str(tmp_path / "RESULTS.md")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert f"no prediction for 1 of the {len(test)} test images" in err and sorted(test)[0] in err
    assert not (tmp_path / "RESULTS.md").exists()
    (run / "metrics.json").write_text(json.dumps({"predictions": preds}))
    assert cli_main(args) == 0
