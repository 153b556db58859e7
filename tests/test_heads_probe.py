"""scripts/heads_probe.py: heads-only fine-tune on cached features, on the tiny preset."""

import sys

import torch
from PIL import Image

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
        Image.fromarray(photo(224 + 40 * i, 224)).save(photos / f"p{i}.png")  # 1 or 2 tiles
    start = save_checkpoint(tiny_model(), tmp_path / "start")
    argv = ["--photos", str(photos), "--checkpoint", str(start), "--cache", str(tmp_path / "cache"), "--ratios", "3:1:1",
            "--train-crops", "0", "--epochs", "1", "--save", str(tmp_path / "saved"), "--min-gain", "-9"]
    _run(probe, monkeypatch, argv)
    out = capsys.readouterr().out
    assert "default, val photos" in out and "epoch 1, training photos" in out

    before, _ = load_checkpoint(start)
    after, card = load_checkpoint(tmp_path / "saved" / "epoch-1")
    assert card["heads_probe"]["epoch"] == 1 and card["init"] == str(start) and card["stage"] == "heads-probe"
    b, a = before.state_dict(), after.state_dict()
    moved = {k for k in b if not torch.equal(b[k], a[k])}
    assert moved and all(k.startswith(("vcg.", "vda.")) for k in moved)

    monkeypatch.setattr(probe, "features", lambda *a, **k: (_ for _ in ()).throw(AssertionError("not cached")))
    _run(probe, monkeypatch, argv[:-4] + ["--epochs", "0"])  # the second run reads every feature from the cache
