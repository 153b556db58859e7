"""The synthetic-set generator: FR-ensemble labels, files, meta.csv, determinism, resume, errors."""
from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from iqa.cli import main
from iqa.data.distortions import KINDS, LEVELS
from iqa.data import contact_sheet as contact_sheet_module
from iqa.data.contact_sheet import contact_sheet
from iqa.data.pseudo_mos import METRICS, pseudo_mos
from iqa.data.synth import (META_COLUMNS, PRISTINE_KIND, SynthConfig, SynthError, kind_rng, random_crops,
                            select_levels, synthesize)

SIZE = (128, 96)
FEW_KINDS = ("gaussian_blur", "white_noise", "colour_block")


def _small(img: np.ndarray) -> np.ndarray:
    """Whole photo downscaled to SIZE: the crop keeps rich content at test size."""
    return cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: faster on small tensors and on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    return {"astronaut": _small(data.astronaut()), "chelsea": _small(data.chelsea())}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Two good photos (bigger than the crop, one smaller in height) and one broken file."""
    d = tmp_path_factory.mktemp("pristine")
    Image.fromarray(cv2.resize(data.astronaut(), (200, 200))).save(d / "astro.png")
    Image.fromarray(cv2.resize(data.chelsea(), (150, 80))).save(d / "cat.jpg", quality=95)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (d / "notes.txt").write_text("not an image, ignored")
    return d


def _config(**kw) -> SynthConfig:
    base = dict(size=SIZE, kinds=FEW_KINDS, seed=3, include_pristine=True)
    base.update(kw)
    return SynthConfig(**base)


@pytest.fixture(scope="module")
def generated(pristine, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "out"
    logs: list[str] = []
    summary = synthesize(pristine, out, _config(), workers=1, progress=False, log=logs.append)
    return out, summary, logs


def _read_meta(out: Path) -> tuple[list[str], list[dict]]:
    with open(out / "meta.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))} | \
        {"meta.csv": (out / "meta.csv").read_bytes()}


# ---------------------------------------------------------------- labels

def test_pseudo_mos_falls_with_level_for_monotone_kinds(refs):
    rising = []
    kinds = [k for k, d in KINDS.items() if d.monotone]
    for name, ref in refs.items():
        images = [KINDS[k](ref, lv, kind_rng(0, name, k)) for k in kinds for lv in range(1, LEVELS + 1)]
        mos = np.array([s.mos for s in pseudo_mos(images, ref)]).reshape(len(kinds), LEVELS)
        rising += [(name, k, m.round(4).tolist()) for k, m in zip(kinds, mos) if np.any(np.diff(m) > 0)]
    assert rising == []


def test_pristine_scores_best(refs):
    ref = refs["chelsea"]
    (best,) = pseudo_mos([ref], ref)
    assert best.mos == pytest.approx(1.0, abs=1e-6)
    assert set(best.metrics) == set(METRICS)
    others = pseudo_mos([d(ref, 1, kind_rng(0, "c", k)) for k, d in KINDS.items()], ref)
    assert max(s.mos for s in others) < best.mos
    assert all(0.0 <= s.mos <= 1.0 for s in others)


def test_metric_maps_are_fixed_and_clipped():
    assert METRICS["gmsd"].quality(0.0) == 1.0 and METRICS["gmsd"].quality(1.0) == 0.0
    assert METRICS["vif_p"].quality(1.3) == 1.0  # contrast enhancement can push VIF above 1
    assert METRICS["ms_ssim"].quality(0.75) == pytest.approx(0.5)


def test_ms_ssim_adapts_to_small_crops():
    a = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    (s,) = pseudo_mos([np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)], a)
    assert 0.0 < s.metrics["ms_ssim"] < 1.0


# ---------------------------------------------------------------- helpers

def test_random_crops_upscale_small_photos():
    img = np.zeros((50, 300, 3), np.uint8)
    crops = random_crops(img, (128, 96), 3, np.random.default_rng(0))
    assert len(crops) == 3 and all(c.shape == (96, 128, 3) for c in crops)


def test_select_levels():
    assert select_levels(5) == (1, 2, 3, 4, 5)
    assert select_levels(3) == (1, 3, 5)
    assert select_levels(1) == (3,)
    with pytest.raises(SynthError):
        select_levels(0)


# ---------------------------------------------------------------- the generated set

def test_meta_csv_is_consistent(generated):
    out, summary, _ = generated
    header, rows = _read_meta(out)
    assert tuple(header) == META_COLUMNS
    assert len(rows) == 2 * (len(FEW_KINDS) * LEVELS + 1)
    assert {r["group"] for r in rows} == {"astro", "cat"}
    for r in rows:
        assert (out / r["image"]).is_file() and (out / r["ref"]).is_file()
        assert r["ref"] == f"refs/{r['group']}_c0.png"
        assert 0.0 <= float(r["mos"]) <= 1.0
        for m in METRICS:
            float(r[m])
        if r["distortion"] == PRISTINE_KIND:
            assert r["level"] == "0" and r["image"] == r["ref"] and float(r["mos"]) > 0.999
        else:
            assert r["distortion"] in FEW_KINDS and 1 <= int(r["level"]) <= LEVELS
            assert r["image"] == f"images/{r['group']}_c0_{r['distortion']}_{r['level']}.png"
            with Image.open(out / r["image"]) as im:
                assert im.size == SIZE and im.mode == "RGB"
    assert len(list((out / "images").glob("*.png"))) == 2 * len(FEW_KINDS) * LEVELS
    assert summary.images_written == 2 * len(FEW_KINDS) * LEVELS


def test_broken_photo_is_reported_and_the_rest_continue(generated):
    out, summary, logs = generated
    assert [Path(f.what).name for f in summary.failures] == ["broken.png"]
    assert any("broken.png" in line for line in logs)
    assert summary.refs == ["astro_c0", "cat_c0"]


def test_same_seed_same_files_whatever_the_workers(generated, pristine, tmp_path):
    out, summary, _ = generated
    again = synthesize(pristine, tmp_path / "again", _config(kinds=("colour_block",), include_pristine=False),
                       workers=2, progress=False, log=lambda m: None)
    assert again.images_written == 2 * LEVELS
    new = _tree(tmp_path / "again")
    assert new.pop("meta.csv") and new == {k: v for k, v in _tree(out).items() if "colour_block" in k or "refs/" in k}
    assert [asdict(s) for s in again.samples] == [asdict(s) for s in summary.samples if s.distortion == "colour_block"]
    other = synthesize(pristine, tmp_path / "other", _config(seed=4, kinds=("white_noise",)), workers=1,
                       progress=False, log=lambda m: None)
    name = other.samples[0].image
    assert name == "images/astro_c0_white_noise_1.png"
    assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes()


def test_rerun_skips_finished_work_and_redoes_missing(generated, pristine, tmp_path):
    out, _, _ = generated
    before = _tree(out)
    victim = out / "images" / "cat_c0_white_noise_2.png"
    victim.unlink()
    summary = synthesize(pristine, out, _config(), workers=1, progress=False, log=lambda m: None)
    assert summary.images_written == LEVELS  # only the (cat, white_noise) part is redone
    assert summary.images_reused == 2 * len(FEW_KINDS) * LEVELS - LEVELS + 2  # + the 2 pristine rows
    assert _tree(out) == before
    assert not list(out.rglob("*.tmp"))


def test_subset_of_levels_reuses_parts(generated, pristine):
    out, _, _ = generated
    summary = synthesize(pristine, out, _config(levels=(1, 5), include_pristine=False), workers=1,
                         progress=False, log=lambda m: None)
    assert summary.images_written == 0
    _, rows = _read_meta(out)
    assert {r["level"] for r in rows} == {"1", "5"} and len(rows) == 2 * len(FEW_KINDS) * 2
    synthesize(pristine, out, _config(), workers=1, progress=False, log=lambda m: None)  # restore


def test_other_settings_in_the_same_folder_are_refused(generated, pristine):
    out, _, _ = generated
    with pytest.raises(SynthError, match="other settings"):
        synthesize(pristine, out, _config(seed=99), workers=1, progress=False)


def test_generic_reader_accepts_the_output(generated):
    datasets = pytest.importorskip("iqa.data.datasets")
    out, summary, _ = generated
    ds = datasets.load_dataset(out, "generic")
    assert len(ds.records) == len(summary.samples)


# ---------------------------------------------------------------- contact sheet and CLI

def test_contact_sheet_layout(refs):
    sheet = contact_sheet(refs["astronaut"], kinds=FEW_KINDS, tile=(64, 48), progress=False)
    pad, text = contact_sheet_module.SHEET_PAD, contact_sheet_module.SHEET_TEXT_ROW
    assert sheet.shape == ((len(FEW_KINDS) + 1) * (48 + text + pad) + pad,
                           contact_sheet_module.SHEET_LABEL_WIDTH + LEVELS * (64 + pad) + pad, 3)
    assert sheet.dtype == np.uint8 and sheet.std() > 10


def test_cli_runs_and_reports(pristine, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["synth", "--pristine", str(pristine), "--out", str(out), "--size", "128x96",
                 "--kinds", "jpeg,darken", "--levels", "2", "--workers", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "broken.png" in captured.err and "8 rows" in captured.out
    _, rows = _read_meta(out)
    assert {(r["distortion"], r["level"]) for r in rows} == {("jpeg", "1"), ("jpeg", "5"),
                                                            ("darken", "1"), ("darken", "5")}


@pytest.mark.parametrize("argv, message", [
    (["--pristine", "X", "--out", "Y", "--kinds", "blurry"], "unknown distortion kind"),
    (["--out", "Y"], "needs --pristine"),
    ([], "nothing to do"),
    (["--pristine", "/nonexistent/dir", "--out", "Y"], "no such file or folder"),
])
def test_cli_errors_are_clear(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["synth", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_tiny_sizes(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--size", "32x32", "--contact-sheet", "x.png"])
    assert "too small" in capsys.readouterr().err
