"""scripts/heads_probe.py: heads-only fine-tune on cached features, on the tiny preset."""

import sys

import pytest
import torch
from PIL import Image, ImageFilter

from helpers import load_script, photo, tiny_model
from iqa.checkpoint import load_checkpoint, save_checkpoint


def _run(probe, monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", ["heads_probe.py", *argv])
    assert probe.main() == 0


def test_probe_trains_only_the_heads_saves_and_reuses_its_cache(tmp_path, monkeypatch, capsys):
    probe = load_script("heads_probe")
    photos = tmp_path / "photos"
    photos.mkdir()
    monkeypatch.setattr(probe, "PLAIN_KINDS", {k: probe.PLAIN_KINDS[k] for k in ("blur",)})
    for i in range(5):  # 3:1:1 -> 3 training photos, 1 validation photo
        Image.fromarray(photo(224 + 40 * (i % 2), 224)).save(photos / f"p{i}.png")  # 1 or 2 tiles
    start = save_checkpoint(tiny_model(), tmp_path / "start")
    argv = ["--photos", str(photos), "--checkpoint", str(start), "--cache", str(tmp_path / "cache"),
            "--ratios", "3:1:1", "--train-crops", "0", "--epochs", "1", "--save", str(tmp_path / "saved"),
            "--min-gain", "-9"]
    _run(probe, monkeypatch, argv)
    out = capsys.readouterr().out
    assert "start, val photos" in out and "epoch 1, training photos" in out

    before, _ = load_checkpoint(start)
    after, card = load_checkpoint(tmp_path / "saved" / "epoch-1")
    assert card["heads_probe"]["epoch"] == 1 and card["init"] == str(start) and card["stage"] == "heads-probe"
    assert card["init_weights"] == probe.weights_digest(start)[:16]  # the start stays known if its path is reused
    compute = card["compute"]  # the features were made in this run, so their time is known
    assert compute["feature_seconds"] >= 0 and compute["cpu_core_hours"] is not None and compute["threads"] >= 1
    b, a = before.state_dict(), after.state_dict()
    moved = {k for k in b if not torch.equal(b[k], a[k])}
    assert moved and all(k.startswith(("vcg.", "vda.")) for k in moved)

    monkeypatch.setattr(probe, "features", lambda *a, **k: (_ for _ in ()).throw(AssertionError("not cached")))
    capsys.readouterr()
    _run(probe, monkeypatch, argv[:-4] + ["--epochs", "0", "--train-limit", "2"])  # every feature from the cache
    assert "training on 2 photos" in capsys.readouterr().out
    saved = ["--checkpoint", str(tmp_path / "saved" / "epoch-1")]
    _run(probe, monkeypatch, argv[:-4] + ["--epochs", "0"] + saved)  # its saved model shares the frozen features


def test_probe_regresses_to_pseudo_mos_crops_and_reports_their_srcc(tmp_path, monkeypatch, capsys):
    probe = load_script("heads_probe")
    photos, crops = tmp_path / "photos", tmp_path / "crops"
    photos.mkdir(), crops.mkdir()
    monkeypatch.setattr(probe, "PLAIN_KINDS", {k: probe.PLAIN_KINDS[k] for k in ("blur",)})
    for i in range(5):
        Image.fromarray(photo(224, 224)).save(photos / f"p{i}.png")
    rows = ["image,mos"]
    for i, (radius, mos) in enumerate([(0, 0.9), (1, 0.7), (2, 0.5), (4, 0.3)]):
        Image.fromarray(photo(224, 224)).filter(ImageFilter.GaussianBlur(radius)).save(crops / f"c{i}.png")
        rows.append(f"c{i}.png,{mos}")
    (crops / "meta.csv").write_text("\n".join(rows) + "\n")
    start = save_checkpoint(tiny_model(), tmp_path / "start")
    _run(probe, monkeypatch, ["--photos", str(photos), "--checkpoint", str(start), "--cache", str(tmp_path / "cache"),
                              "--ratios", "3:1:1", "--train-crops", "1", "--epochs", "1", "--mos", str(crops),
                              "--mos-val", str(crops), "--mos-batch", "4"])
    out = capsys.readouterr().out
    assert "start, val crops: SRCC against pseudo-MOS" in out and "epoch 1, val crops: SRCC" in out
    cached = probe.Crops(**torch.load(next((tmp_path / "cache").glob("*/mos-*.pt")), weights_only=True))
    assert cached.mos.tolist() == pytest.approx([0.9, 0.7, 0.5, 0.3])  # as written, not rescaled to 0-1


def test_probe_widens_the_series_to_other_kinds_and_keeps_the_criterion_on_the_plain_ones(tmp_path, monkeypatch,
                                                                                         capsys):
    probe = load_script("heads_probe")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(photo(224, 224)).save(photos / f"p{i}.png")
    start = save_checkpoint(tiny_model(), tmp_path / "start")
    _run(probe, monkeypatch, ["--photos", str(photos), "--checkpoint", str(start), "--cache", str(tmp_path / "cache"),
                              "--ratios", "3:1:1", "--train-crops", "1", "--held-crops", "1", "--epochs", "0",
                              "--kinds", "blur,jpeg,white_noise", "--skip-kinds", "white_noise"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("start, val photos"))
    assert "other kinds mean rho" in line and "jpeg " in line and "white_noise" not in line
    tag = probe.kinds_tag(["blur", "jpeg"])
    folders = sorted(p.name for p in (tmp_path / "cache").glob("*/*") if p.is_dir())
    assert folders == [f"train-crops1-seed100{tag}", f"val-crops1-seed0{tag}"]  # one file a photo in each
    assert probe.kinds_tag(list(probe.PLAIN_KINDS)) == ""  # the plain kinds keep the older caches' names
    parts = sorted((tmp_path / "cache").glob(f"*/train-crops1-seed100{tag}/*.pt"))
    assert [p.name[:4] for p in parts] == ["000-", "001-", "002-"]  # named by place in the split (distortion seed)
    series = [probe.Series(**d) for p in parts for d in torch.load(p, weights_only=True)]
    assert {s.kind for s in series} == {"blur", "jpeg"} and len(series) == 6


def test_save_criterion_asks_the_other_kinds_to_gain_only_when_there_are_some():
    probe = load_script("heads_probe")
    args = probe.argparse.Namespace(min_gain=-0.02, min_other_gain=0.02)

    def at(total: float, other: float = float("nan")):
        return probe.ProbeLevels(probe.MethodLevels("m", total / 3, {}, total / 3, 0.0, total / 3, 1), other)

    assert probe.passes(at(2.59), at(2.60), args) and not probe.passes(at(2.57), at(2.60), args)
    assert probe.passes(at(2.60, 0.83), at(2.60, 0.80), args)
    assert not probe.passes(at(2.60, 0.81), at(2.60, 0.80), args)  # the other kinds gained too little
    assert not probe.passes(at(2.50, 0.90), at(2.60, 0.80), args)  # the plain kinds lost too much


@pytest.mark.parametrize("flags, said", [(["--kinds", "blurr"], "unknown blurr"),
                                         (["--skip-kinds", "blurr"], "unknown blurr"),
                                         (["--kinds", "blur", "--skip-kinds", "blur"], "leaves none")])
def test_probe_refuses_unknown_or_emptied_kinds_before_loading_anything(tmp_path, monkeypatch, capsys, flags, said):
    probe = load_script("heads_probe")
    monkeypatch.setattr(probe, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    monkeypatch.setattr(sys, "argv", ["heads_probe.py", "--photos", str(tmp_path), *flags])
    with pytest.raises(SystemExit) as exit_:
        probe.main()
    assert exit_.value.code == 2 and said in capsys.readouterr().err
