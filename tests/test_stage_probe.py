"""scripts/stage_probe.py: the backbone's last stage and the heads fine-tuned on cached features."""

import sys

import pytest
import torch
from PIL import Image

from helpers import load_script, photo, tiny_model
from iqa.assess import TILE, crop_boxes, load, to_tensor
from iqa.checkpoint import load_checkpoint, save_checkpoint
from iqa.config import BackboneConfig


def lite0_tiny():
    """The tiny preset on a randomly initialised EfficientNet-Lite0, the backbone this probe splits."""
    model = tiny_model()
    cfg = model.cfg
    cfg.vcg.backbone = BackboneConfig(name="efficientnet_lite0", indices=(1, 2, 3, 4), pretrained="none")
    cfg.vda.backbone = BackboneConfig(name="efficientnet_lite0", indices=(4,), pretrained="none")
    torch.manual_seed(0)
    return type(model)(cfg).eval()


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    return save_checkpoint(lite0_tiny(), tmp_path_factory.mktemp("start") / "start")


def test_cached_parts_put_back_together_are_the_model_s_own_inputs(start):
    probe = load_script("stage_probe")
    a = load(start, device="cpu", fold_batchnorm=False)
    stage = probe.LastStage(a)
    img = photo(300, 224).copy()  # writable, as a loaded image is
    cached = probe.features(a, stage, img)
    boxes = crop_boxes(300, 224, a.cfg.crop, TILE, a.cell)
    with torch.no_grad():
        states, _ = a.restore(to_tensor(img), boxes, None, 0)
        crops = torch.stack([torch.stack([s[0, :, y0:y1, x0:x1] for s in states]) for x0, y0, x1, y1 in boxes])
        own = a.model.features(crops)
        vcg, vda = stage.assemble(cached["fixed"], cached["stats"], cached["enter"])
        score, mine = a.model.heads(own).score, stage.scores(cached["fixed"], cached["stats"], cached["enter"])[0]
    assert vcg.shape == own.vcg.shape and vda.shape == own.vda.shape
    assert torch.allclose(vcg, own.vcg, atol=2e-2 * own.vcg.abs().max().item())  # float16 cache
    assert torch.allclose(mine, score, atol=1e-2)


def _run(probe, monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", ["stage_probe.py", *argv])
    assert probe.main() == 0


def test_probe_trains_the_last_stage_and_the_heads_saves_and_resumes(start, tmp_path, monkeypatch, capsys):
    probe = load_script("stage_probe")
    photos = tmp_path / "photos"
    photos.mkdir()
    monkeypatch.setattr(probe, "PLAIN_KINDS", {k: probe.PLAIN_KINDS[k] for k in ("blur",)})
    for i in range(5):  # 3:1:1 -> 3 training photos, 1 validation photo
        Image.fromarray(photo(224, 224)).save(photos / f"p{i}.png")
    argv = ["--photos", str(photos), "--checkpoint", str(start), "--cache", str(tmp_path / "cache"),
            "--ratios", "3:1:1", "--train-photos", "2", "--epochs", "1", "--save", str(tmp_path / "saved"),
            "--min-gain", "-9", "--state-every", "1"]
    _run(probe, monkeypatch, argv)
    out = capsys.readouterr().out
    first, _, last = probe.held_out_photos(photos, "train", "3:1:1")  # 2 photos spread over 3: the ends
    assert f"training on 2 photos: {first.name}, {last.name}" in out and "epoch 1, val photos" in out
    files = sorted(p.name for p in (tmp_path / "cache").glob("*/train-seed100/*.pt"))
    assert files == [f"000-{first.name}.pt", f"002-{last.name}.pt"]  # named by place in the split (distortion seed)

    before, _ = load_checkpoint(start)
    after, card = load_checkpoint(tmp_path / "saved" / "epoch-1")
    assert card["stage"] == "stage-probe" and card["stage_probe"]["epoch"] == 1 and card["compute"]["threads"] >= 1
    b, a = before.state_dict(), after.state_dict()
    moved = {k for k in b if not torch.equal(b[k], a[k])}
    assert any(k.startswith("backbone.model.blocks.6.") for k in moved)
    assert all(k.startswith(("vcg.", "vda.", "backbone.model.blocks.5.", "backbone.model.blocks.6."))
               for k in moved)

    monkeypatch.setattr(probe, "features", lambda *a, **k: (_ for _ in ()).throw(AssertionError("not cached")))
    monkeypatch.setattr(probe, "save_checkpoint", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    _run(probe, monkeypatch, argv)  # the same command: features from the cache, epoch 1 already done
    argv[argv.index("--epochs") + 1] = "2"
    monkeypatch.undo()
    monkeypatch.setattr(probe, "PLAIN_KINDS", {k: probe.PLAIN_KINDS[k] for k in ("blur",)})
    _run(probe, monkeypatch, argv)
    assert "resumed from" in capsys.readouterr().out and (tmp_path / "saved" / "epoch-2").is_dir()
