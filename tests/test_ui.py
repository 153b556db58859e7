"""UI handlers with the tiny model: inspect, maps, report, batch, errors, zip unpacking, training commands."""
from __future__ import annotations

import base64
import io
import json
import os
import stat
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from iqa.assess import Assessor
from iqa.checkpoint import save_checkpoint
from iqa.images import MAX_FILE_BYTES
from tests.helpers import FixedPattern, photo, tiny_model
from ui import batch_tab, inspect_tab, model_tab, render, report, train_tab
from ui.archive import ArchiveError, safe_extract, unpack_once
from ui.image_input import ImageInput
from ui.app import build_app, launch_kwargs
from ui.settings import RunSettings
from ui.state import AppState
from ui.training_job import TrainJob, TrainSpec, build_commands, read_records

FAST = dict(steps=2, crops=1, seed=0, device="cpu")


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> AppState:
    return AppState.create("tiny", runs_dir=tmp_path_factory.mktemp("runs"), allow_server_data=False)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(photo(320, 240)).save(path)
    return path


@pytest.fixture(scope="module")
def view(app, image_file) -> inspect_tab.InspectView:
    return inspect_tab.assess_image(app, str(image_file), RunSettings("tiny", **FAST))


def test_inspect_returns_score_maps_and_overlays(view):
    a = view.state.assessment
    n = view.numbers
    assert np.isfinite(n["score"]) and n["s1"] is not None and n["s2"] is not None
    assert n["band"] == render.quality_band(n["score"]) and "higher = better" in n["scale"]
    assert n["model"]["trained"] is False and "untrained" in view.verdict.lower()
    assert f"{a.score:.3f}" in view.verdict
    h, w = a.image.shape[:2]
    assert view.maps.overlay.shape == (h, w, 3) and view.maps.colour_bar.ndim == 3
    assert view.pair[0].shape == view.pair[1].shape == (h, w, 3)
    captions = [c for _, c in view.gallery]
    assert len(captions) == 2 + len(a.states) and all("σ=" in c for c in captions[1:-1]) and "y0|" in captions[-1]
    assert [bar for bar in view.chart.data[0].x] == ["S1 · VCG", "S2 · VDA", "S = final"]
    assert len(inspect_tab.outputs(view)) == 12


def test_overlay_opacity_and_patch_selection(view):
    state = view.state
    a = state.assessment
    clear = inspect_tab.draw_map(state, "VCG", "weight", 0.0).overlay
    assert np.array_equal(clear, a.image)  # opacity 0: the image itself
    x0, y0, x1, y1 = a.crops[0]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # inside the analysed crop
    text, picked = inspect_tab.patch_text(state, cx, cy)
    row, col = a.vcg.cell_at(cx, cy)
    assert picked == (row, col) and f"{a.vcg.score[row, col]:.4f}" in text and f"{a.vcg.weight[row, col]:.4f}" in text
    outlined = inspect_tab.draw_map(replace(state, selected=(cx, cy)), "VCG", "score", 0.0).overlay
    bx0, by0 = a.vcg.boxes[row, col][:2]
    assert tuple(outlined[by0, bx0]) == render.HIGHLIGHT_RGB and not np.array_equal(outlined, a.image)
    for kind in render.MAP_KINDS:  # every map kind draws on both branches
        for branch in render.BRANCHES:
            assert inspect_tab.draw_map(state, branch, kind, 0.5).overlay.shape == a.image.shape


def test_vda_is_shown_per_crop_not_as_a_map(view):
    a = view.state.assessment
    assert a.vcg.spatial and not a.vda.spatial and render.branch_maps(a, "VDA") is None
    shown = inspect_tab.draw_map(view.state, "VDA", "score", 0.5).overlay
    x0, y0 = a.crops[0][:2]
    assert tuple(shown[y0, x0]) == render.CROP_RGB  # crops outlined, no colour map
    text, _ = inspect_tab.patch_text(view.state, x0 + 1, y0 + 1)
    assert "VDA |" not in text and f"{a.crop_s2[0]:.3f}" in text
    cov = a.vcg.coverage
    assert cov < 0.999  # one crop of a 320x240 photo
    assert f"cover {cov:.0%} of the image" in render.coverage_text(a) and "set Crops to 0" in render.coverage_text(a)


def test_tiles_cover_an_image_off_the_cell_grid(app, tmp_path):
    path = tmp_path / "odd.png"
    Image.fromarray(photo(250, 236)).save(path)  # not a multiple of the 16-px cell: a partial last row and column
    v = inspect_tab.assess_image(app, str(path), RunSettings("tiny", **{**FAST, "crops": 0}))
    a = v.state.assessment
    assert a.vcg.coverage == 1 and render.coverage_text(a) == f"The {len(a.crops)} crops cover the whole image."
    assert "Not covered" not in inspect_tab.patch_text(v.state, 249, 235)[0]


def test_maps_use_one_fixed_range_and_hatch_uncovered_cells():
    values = np.full((20, 20), np.nan)
    values[:, :10] = 0.5
    img = np.full((20, 20, 3), 200, np.uint8)
    out = render.overlay(img, values, "viridis", 1.0, render.MAP_RANGE)
    assert tuple(out[0, 0]) == tuple(out[5, 5])  # covered: one colour for one value
    hatched = out[:, 10:][(out[:, 10:] != 200).any(-1)]
    assert len(hatched) and np.all(hatched == render.HATCH_GREY)


def test_report_json_and_png(view):
    js, png = (Path(p) for p in inspect_tab.make_report(view.state))
    data = json.loads(js.read_text())
    assert data["score"] == pytest.approx(view.state.assessment.score) and data["band"]
    assert len(data["patch_maps"]["vcg"]["score"]) == view.state.assessment.vcg.score.shape[0]
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 800


def test_batch_bad_file_gets_error_row(app, image_file, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = batch_tab.assess_files(app, [str(image_file), str(bad)], RunSettings("tiny", **FAST))
    good_row, bad_row = result.rows
    assert good_row.error == "" and np.isfinite(good_row.score) and good_row.seconds > 0
    assert bad_row.score is None and "notes.png" in bad_row.error and "not a readable image" in bad_row.error
    csv_path, json_path = result.files
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("file,score,S1,S2,seconds") and len(lines) == 3
    assert json.loads(json_path.read_text())["results"][1]["error"] == bad_row.error
    assert "1** file(s) could not be read" in batch_tab.summary_text(result.rows)


def test_friendly_errors_for_non_image_oversized_and_missing(app, tmp_path):
    settings = RunSettings("tiny", **FAST)
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    with pytest.raises(gr.Error, match="readme.txt: not a readable image"):
        inspect_tab.assess_image(app, str(text), settings)
    huge = tmp_path / "huge.png"
    with huge.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(gr.Error, match=r"huge.png: file is \d+ MB; the limit is"):
        inspect_tab.assess_image(app, str(huge), settings)
    with pytest.raises(gr.Error, match="Add an image first"):
        inspect_tab.assess_image(app, None, settings)
    with pytest.raises(gr.Error, match="Sampling steps must be between"):
        RunSettings.parse("tiny", 1, 1, 0, "cpu")
    with pytest.raises(gr.Error, match="The seed must be between"):
        RunSettings.parse("tiny", 2, 1, 1e30, "cpu")
    with pytest.raises(gr.Error, match="whole numbers"):
        RunSettings.parse("tiny", 2, 1, float("inf"), "cpu")
    with pytest.raises(gr.Error, match="not one of the app's checkpoints"):
        inspect_tab.assess_image(app, str(text), RunSettings("/etc", **FAST))
    assert launch_kwargs()["max_file_size"].endswith("mb")  # the server bounds uploads too


def _zip(path: Path, entries: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "data/../../escape.txt", "C:/escape.txt"])
def test_zip_refuses_path_traversal(tmp_path, evil):
    z = _zip(tmp_path / "evil.zip", {"data/meta.csv": b"image,mos\n", evil: b"x"})
    with pytest.raises(ArchiveError, match="outside the archive"):
        safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()


def test_zip_refuses_links_and_oversize_and_unpacks_good(tmp_path):
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract(_zip(tmp_path / "l.zip", {"a.txt": b"x"}, links=("link",)), tmp_path / "o1")
    with pytest.raises(ArchiveError, match="more than"):
        safe_extract(_zip(tmp_path / "big.zip", {"a.bin": os.urandom(4096)}), tmp_path / "o2", max_bytes=1024)
    assert not (tmp_path / "o2").exists()
    with pytest.raises(ArchiveError, match="not a readable .zip"):
        (tmp_path / "fake.zip").write_text("nope")
        safe_extract(tmp_path / "fake.zip", tmp_path / "o3")
    root = safe_extract(_zip(tmp_path / "ok.zip", {"mydata/meta.csv": b"image,mos\n", "mydata/img/a.png": b"1",
                                                   "__MACOSX/._x": b""}), tmp_path / "o4")
    assert root == tmp_path / "o4" / "mydata" and (root / "img" / "a.png").read_bytes() == b"1"


def _damaged(path: Path, how: str) -> Path:
    """A one-entry zip broken the way real uploads are: corrupt data, a password, Deflate64 (method 9)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("set/meta.csv", os.urandom(3000).hex().encode())
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    if how == "corrupt":
        data[40:60] = b"\xff" * 20  # inside the deflate stream, after the 38-byte local header
    if how == "encrypted":  # flag bit 0, in the local header and in the central directory
        data[6] |= 1
        data[central + 8] |= 1
    if how == "deflate64":  # the method field, likewise
        data[8] = data[central + 10] = 9
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how, match", [("corrupt", "damaged"), ("encrypted", "password-protected"),
                                        ("deflate64", "compression method")])
def test_zip_damaged_or_unsupported_is_refused_cleanly(tmp_path, how, match):
    with pytest.raises(ArchiveError, match=match):
        safe_extract(_damaged(tmp_path / f"{how}.zip", how), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _generic_dataset(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    (root / "meta.csv").write_text("image,mos\nimg/a.png,3.0\n")
    return root


def test_train_command_building(app, tmp_path, monkeypatch):
    spec = TrainSpec(data=tmp_path / "d", format="generic", run_dir=tmp_path / "run", preset="lite", csv="meta.csv",
                     init=tmp_path / "ck", epochs=3, batch=4, lr=1e-4, device="cuda", freeze_backbones=True)
    splits, train = build_commands(spec, python="py")
    assert splits == ["py", "-m", "iqa", "splits", "--data", str(tmp_path / "d"), "--format", "generic", "--csv",
                      "meta.csv", "--ratios", "7:1:2", "--count", "1", "--seed", "0", "--out", str(spec.split_file)]
    assert train == ["py", "-m", "iqa", "train", "--data", str(tmp_path / "d"), "--format", "generic", "--csv",
                     "meta.csv", "--split-file", str(spec.split_file), "--split-index", "0",
                     "--init", str(tmp_path / "ck"), "--epochs", "3", "--batch", "4", "--lr", "0.0001",
                     "--device", "cuda", "--freeze-backbones", "--out", str(tmp_path / "run")]
    minimal = build_commands(TrainSpec(tmp_path / "d", "live", tmp_path / "r", "tiny"), python="py")[1]
    assert "--epochs" not in minimal and "--device" not in minimal and "--init" not in minimal
    assert minimal[minimal.index("--preset") + 1] == "tiny"

    monkeypatch.setattr(train_tab, "cuda_available", lambda: False)
    monkeypatch.setattr(train_tab, "on_space", lambda: False)
    data = _generic_dataset(tmp_path / "ds")
    form = train_tab.TrainForm(source=train_tab.SOURCE_SERVER, server_dir=str(data), epochs=2, confirm_cpu=True)
    with pytest.raises(gr.Error, match="Server folders are disabled"):
        train_tab.prepare(app, form, "tiny")
    allowed = AppState.create("tiny", runs_dir=tmp_path / "runs", allow_server_data=True)
    spec = train_tab.prepare(allowed, form, "tiny", stamp="S")
    assert spec.format == "generic" and spec.data == data.resolve() and spec.epochs == 2
    assert spec.run_dir == tmp_path / "runs" / "S-lite"
    with pytest.raises(gr.Error, match="run on the CPU anyway"):
        train_tab.prepare(allowed, train_tab.TrainForm(**{**form.__dict__, "confirm_cpu": False}), "tiny")
    with pytest.raises(gr.Error, match="Fine-tuning needs a trained checkpoint"):
        train_tab.prepare(allowed, train_tab.TrainForm(**{**form.__dict__, "finetune": True}), "tiny")
    with pytest.raises(gr.Error, match="positive whole number"):
        train_tab.prepare(allowed, train_tab.TrainForm(**{**form.__dict__, "epochs": 1.5}), "tiny")
    monkeypatch.setattr(train_tab, "on_space", lambda: True)
    hw = train_tab.hardware()
    assert not hw.can_train and "no GPU" in hw.note and "run locally" in hw.note
    with pytest.raises(gr.Error, match="no GPU"):
        train_tab.prepare(allowed, form, "tiny")


def test_train_from_uploaded_zip(tmp_path, monkeypatch):
    monkeypatch.setattr(train_tab, "cuda_available", lambda: False)
    monkeypatch.setattr(train_tab, "on_space", lambda: False)
    app = AppState.create("tiny", runs_dir=tmp_path / "runs")
    datasets = tmp_path / "runs" / "datasets"

    def prepare(zip_file: Path, **form) -> train_tab.TrainSpec:
        return train_tab.prepare(app, train_tab.TrainForm(zip_file=str(zip_file), confirm_cpu=True, **form), "tiny")

    z = _zip(tmp_path / "my data.zip", {"set/meta.csv": b"image,mos\nimg/a.png,3\n", "set/img/a.png": b"x"})
    spec = prepare(z)
    assert spec.data.name == "set" and spec.data.parent.name.startswith("my_data-") and spec.format == "generic"
    again = prepare(z, csv="meta.csv")  # the same upload is unpacked once, whatever the runs
    assert again.data == spec.data and again.csv == str(spec.data / "meta.csv") and len(list(datasets.iterdir())) == 1
    with pytest.raises(gr.Error, match="outside the archive"):
        prepare(_zip(tmp_path / "bad.zip", {"../x": b"1"}))
    other = _zip(tmp_path / "other.zip", {"meta.csv": b"image,mos\na.png,3\n", "a.png": b"x"})
    for label, match in (("/etc/passwd", "inside the dataset folder"), ("../../x.csv", "inside the dataset folder"),
                         ("labels.csv", "not in the dataset folder")):
        with pytest.raises(gr.Error, match=match):
            prepare(other, csv=label)
        assert len(list(datasets.iterdir())) == 1  # the refused upload was removed
    with pytest.raises(gr.Error, match="inside the dataset folder"):  # a refused form keeps an earlier unpacking
        prepare(z, csv="/etc/passwd")
    assert spec.data.is_dir()


def test_unpack_once_replaces_a_partial_unpacking(tmp_path):
    z = _zip(tmp_path / "d.zip", {"meta.csv": b"image,mos\n"})
    (tmp_path / "out.partial" / "half").mkdir(parents=True)  # as an app killed while unpacking leaves it
    root, created = unpack_once(z, tmp_path / "out")
    assert created and root == tmp_path / "out" and (root / "meta.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip", "out"]
    assert unpack_once(z, tmp_path / "out") == (root, False)


def test_train_job_runs_logs_and_stops(tmp_path):
    script = ("import json,sys,pathlib; d=pathlib.Path(sys.argv[1]);"
              "[print(json.dumps({'epoch':e,'loss':1/e,'val_srcc':0.5,'val_plcc':0.6}),file=(d/'log.jsonl').open('a'))"
              " for e in (1,2)]")
    job = TrainJob([[sys.executable, "-c", script, str(tmp_path / "r")]], tmp_path / "r", epochs=2).start()
    assert job.wait(timeout=30) and job.returncode == 0
    assert [r["epoch"] for r in read_records(job.run_dir)] == [1, 2] and "Finished" in job.status_text()
    assert "epoch 2/2" in job.status_text()
    fig = render.training_curves(read_records(job.run_dir))
    assert {t.name for t in fig.data} == {"train loss", "val SRCC", "val PLCC"}
    slow = TrainJob([[sys.executable, "-c", "import time; time.sleep(60)"], [sys.executable, "-c", "print(1)"]],
                    tmp_path / "s").start()
    while slow._proc is None:
        slow.wait(timeout=0.05)
    slow.stop(grace_s=5)
    assert slow.wait(timeout=10) and slow.returncode != 0 and "Stopped" in slow.status_text()
    assert "print(1)" not in (tmp_path / "s" / "console.log").read_text()  # the next command never started


def test_checkpoints_from_runs_model_card_and_fine_tuning(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    save_checkpoint(tiny_model(), runs / "r1" / "best",
                    {"training_data": "KonIQ-10k (test)", "metrics": {"srcc": 0.9}, "provenance": "unit test"})
    app = AppState.create("tiny", runs_dir=runs, allow_server_data=True)
    keys = [k for _, k in app.dropdown_choices()]
    best = str((runs / "r1" / "best").resolve())
    assert keys[0] == "tiny" and best in keys
    text, raw = model_tab.show(app, best)
    assert "KonIQ-10k (test)" in text and "srcc: 0.9" in text and "unit test" in text and "Untrained" not in text
    assert raw["config"]["name"] == "tiny"
    preset_text, _ = model_tab.show(app, "tiny")
    assert "Untrained" in preset_text and "Parameters" in preset_text
    monkeypatch.setattr(train_tab, "cuda_available", lambda: False)
    monkeypatch.setattr(train_tab, "on_space", lambda: False)
    form = train_tab.TrainForm(source=train_tab.SOURCE_SERVER, server_dir=str(_generic_dataset(tmp_path / "ds")),
                               finetune=True, confirm_cpu=True)
    spec = train_tab.prepare(app, form, best, stamp="F")
    assert spec.init == Path(best) and "--init" in build_commands(spec)[1]

    # A run that ends with a best checkpoint: the timer stops and the selector lists it.
    fresh = AppState.create("tiny", runs_dir=tmp_path / "runs2")
    new_best = tmp_path / "runs2" / "new" / "best"
    copy = f"import shutil; shutil.copytree({str(runs / 'r1' / 'best')!r}, {str(new_best)!r})"
    job = fresh.jobs.start(TrainJob([[sys.executable, "-c", copy]], new_best.parent))
    assert job.wait(timeout=30) and job.returncode == 0
    status, _fig, _log, timer, selector = train_tab.tick(fresh, "tiny")
    assert "Finished" in status and "now in the selector" in status and timer.active is False
    assert str(new_best.resolve()) in [k for _, k in selector["choices"]] and selector["value"] == "tiny"


def test_image_input_passes_the_file_on(tmp_path):
    from gradio.data_classes import ImageData

    component = ImageInput()
    path = tmp_path / "x.png"
    path.write_text("not checked here: iqa.images reads it")
    assert component.preprocess(ImageData(path=str(path), orig_name="x.png")) == str(path)
    buf = io.BytesIO()
    Image.fromarray(photo(32, 32)).save(buf, "PNG")
    pasted = component.preprocess(ImageData(url="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()))
    assert Path(pasted).read_bytes() == buf.getvalue()
    assert component.preprocess(None) is None and component.get_block_name() == "image"


def test_build_app_names_api_endpoints(tmp_path):
    demo = build_app("tiny", runs_dir=tmp_path)
    names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert {"assess", "batch"} <= names and len(names) == 2


def test_batch_numbers_repeated_file_names(app, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        Image.fromarray(photo(230, 230)).save(tmp_path / folder / "img.png")
    result = batch_tab.assess_files(app, [str(tmp_path / "a" / "img.png"), str(tmp_path / "b" / "img.png")],
                                    RunSettings("tiny", **FAST))
    assert [r.file for r in result.rows] == ["img.png", "img.png (2)"]


def test_model_card_cells_keep_pipes_and_line_breaks_inside_the_table(app):
    info = replace(app.info("tiny"), card={"provenance": "run A | run B", "notes": "one\n\ntwo"})
    rows = [line for line in model_tab.card_markdown(info).splitlines() if line.startswith("| ")]
    assert "| Provenance | run A \\| run B |" in rows and "| notes | one<br><br>two |" in rows


def test_report_title_with_dollar_signs_is_not_a_formula(app, tmp_path):
    image = tmp_path / "IMG_$1_$2.png"
    Image.fromarray(photo(230, 230)).save(image)
    view = inspect_tab.assess_image(app, str(image), RunSettings("tiny", **FAST))
    files = inspect_tab.make_report(view.state)
    assert any(f.endswith(".png") and Path(f).stat().st_size > 0 for f in files)


def test_train_form_refuses_non_finite_numbers(app):
    for field, value in (("epochs", float("inf")), ("lr", float("nan"))):
        with pytest.raises(gr.Error, match="finite number"):
            train_tab.prepare(app, train_tab.TrainForm(zip_file="data.zip", confirm_cpu=True, **{field: value}), "tiny")


def test_train_form_asks_for_the_dataset_before_the_cpu_confirmation(app):
    with pytest.raises(gr.Error, match="Upload the dataset"):
        train_tab.prepare(app, train_tab.TrainForm(confirm_cpu=False), "tiny")


def test_train_help_names_every_format_and_the_bundled_diffusion_needs_lite(app, tmp_path):
    from iqa.data.datasets import FORMATS
    text = train_tab.formats_help()
    assert all(f"(`{f}`)" in text for f in FORMATS) and "image,mos,ref,group" in text
    data = _generic_dataset(tmp_path / "ds")
    form = train_tab.TrainForm(source=train_tab.SOURCE_SERVER, server_dir=str(data), confirm_cpu=True, preset="tiny")
    allowed = replace(app, allow_server_data=True)
    with pytest.raises(gr.Error, match="bundled diffusion network is a lite network"):
        train_tab.prepare(allowed, form, "tiny")
    spec = train_tab.prepare(allowed, replace(form, diffusion=train_tab.DIFFUSION_NONE), "tiny")
    assert spec.diffusion is None and "--diffusion" not in build_commands(spec)[1]


def test_console_tail_shows_the_latest_lines_and_one_line_per_progress_bar(tmp_path):
    from ui.training_job import CONSOLE, TAIL_LINES, console_tail
    (tmp_path / CONSOLE).write_text("".join(f"line {i}\n" for i in range(30)) + "epoch 1: 10%\repoch 1: 50%\r")
    lines = console_tail(tmp_path).splitlines()
    assert len(lines) == TAIL_LINES and lines[-1] == "epoch 1: 50%" and lines[-2] == "line 29"


def test_empty_training_chart_says_so():
    fig = render.training_curves([])
    assert any("no epochs yet" in a.text for a in fig.layout.annotations)


def test_try_it_commands_make_a_dataset_then_train_one_epoch(tmp_path):
    from iqa.cli import build_parser
    from ui.training_job import TRY_PHOTOS, try_commands, write_try_photos
    pristine = write_try_photos(tmp_path / "pristine")
    assert sorted(p.stem for p in pristine.glob("*.png")) == sorted(TRY_PHOTOS)
    commands = try_commands(pristine, tmp_path / "data", tmp_path / "run")
    assert [c[3] for c in commands] == ["synth", "splits", "train"]
    for c in commands:  # every flag is one the command takes
        build_parser().parse_args(c[3:])
    assert commands[2][commands[2].index("--epochs") + 1] == "1"


def test_model_card_reads_as_sections_with_the_levels_table(app):
    levels = {"method": "m", "photos": 9, "rho": 0.9, "adjacent": 0.8, "clean_above_level1": 0.7,
              "per_kind": {"blur": 0.95}, "command": "python -m iqa levels",
              "checks": [{"text": "ρ ≥ 0.95", "passed": False}],
              "others": {"BRISQUE": {"rho": 0.93, "adjacent": 0.9, "clean_above_level1": 0.8}}}
    info = replace(app.info("tiny"), card={"stage": "train-rank", "evaluation": {"levels": levels}})
    text = model_tab.card_markdown(info)
    for heading in ("### What it is", "### How it was trained", "### Held-out results", "### Limits",
                    "### All card fields"):
        assert heading in text
    assert "| BRISQUE | 0.93 | 0.9 | 0.8 |" in text and "Not yet reached: ρ ≥ 0.95" in text


def test_model_tab_folds_the_every_field_table_away(app):
    sections, fields, raw = model_tab.folded_view(app, "tiny")
    assert "### What it is" in sections and "| field | value |" not in sections
    assert "| field | value |" in fields and "| Preset | tiny |" in fields and raw["config"]


def test_fixed_vcg_weights_are_said_and_not_drawn(view):
    model = tiny_model()
    model.vcg.head.weight = FixedPattern(model.cfg.vcg.grid ** 2)
    a = Assessor(model, device="cpu").assess(photo(320, 240), crops=2, steps=2)
    assert a.vcg.weight_fixed and render.map_kinds(a.vcg) == ("score",)
    assert "same weight pattern" in render.weights_note(a) and not render.weights_note(view.state.assessment)
    state = replace(view.state, assessment=a)
    as_score = inspect_tab.draw_map(state, "VCG", "score", 0.5).overlay
    assert np.array_equal(inspect_tab.draw_map(state, "VCG", "weight", 0.5).overlay, as_score)
    out = inspect_tab.outputs(replace(view, state=state))
    assert out[10]["choices"] == ["score"] and out[10]["value"] == "score"
    assert "same weight pattern" in out[8] and "same weight pattern" in inspect_tab.patch_text(state, 5, 5)[0]
    assert report.maps_json(a.vcg)["weight_fixed"] is True
