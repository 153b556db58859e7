import dataclasses
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from iqa.assess import Assessor, crop_boxes
from iqa.cache import DiffusionCache, FeatureCache, compact_features, feature_layout
from iqa.config import ModelConfig, tiny
from iqa.model import DiffV2IQA
from iqa.train_iqa import prepare_model
from tests.helpers import photo

MICRO_CROP, MICRO_GRID = 64, 8


def micro_config() -> ModelConfig:
    """The tiny preset shrunk further for fast tests: 64 px crops, an 8x8 token grid, timm's
    `test_efficientnet` backbone with two maps (one pooled to the grid, one upsampled to it), a
    2-level U-Net with 2 sampling steps."""
    cfg = tiny()
    cfg.name = "micro"
    cfg.crop, cfg.vcg.grid, cfg.vda.grid = MICRO_CROP, MICRO_GRID, MICRO_GRID
    cfg.vcg.backbone = dataclasses.replace(cfg.vcg.backbone, name="test_efficientnet", indices=(1, 3))
    cfg.vcg.select_x, cfg.vcg.select_y0, cfg.vcg.select_y1, cfg.vcg.select_y2 = (0, 1), (0,), (0,), (0,)
    cfg.vda.feature = "pooled"
    cfg.diffusion.unet = dataclasses.replace(cfg.diffusion.unet, channel_mults=(1, 2))
    cfg.diffusion.sample_steps, cfg.diffusion.keep_steps = 2, (1, 2)
    return cfg


def micro_model(seed: int = 0, **overrides) -> DiffV2IQA:
    torch.manual_seed(seed)
    return DiffV2IQA(dataclasses.replace(micro_config(), **overrides)).eval()


class Counting:
    """Wraps Assessor.restore to count diffusion runs."""

    def __init__(self, assessor: Assessor):
        self.calls = 0
        self._restore = assessor.restore
        assessor.restore = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._restore(*args, **kwargs)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(photo(100, 80)).save(path)
    return path


def make_cache(root, model, crops=2, seed=0):
    assessor = Assessor(model, device="cpu")
    return DiffusionCache(root, assessor, crops, seed=seed), Counting(assessor)


def test_miss_then_hit_and_entry_content(tmp_path, image):
    cache, counter = make_cache(tmp_path / "c", micro_model())
    assert cache.lookup(image) is None
    entry = cache.get(image)
    assert counter.calls == 1 and cache.path(cache.key(image)).is_file()
    again = cache.get(image)
    assert counter.calls == 1  # hit: no second diffusion run
    assert np.array_equal(again.states, entry.states) and again.steps == entry.steps
    assert entry.states.shape == (4, 80, 100, 3) and entry.states.dtype == np.uint8
    assert [tuple(b) for b in entry.boxes] == crop_boxes(100, 80, MICRO_CROP, 2, 8)  # "crops" mode windows
    assert cache.fill([image]) == 0


def test_cached_states_match_inference(tmp_path, image):
    model = micro_model()
    cache, _ = make_cache(tmp_path / "c", model)
    entry = cache.get(image)
    r = Assessor(model, device="cpu").assess(str(image), crops=2, seed=0)
    assert np.array_equal(entry.states[0], r.image) and np.array_equal(entry.states[1], r.restored)
    assert np.array_equal(entry.states[3], r.states[1].image) and entry.alpha_bars[1] == r.states[1].alpha_bar


def test_image_mode_restores_whole_image(tmp_path, image):
    model = micro_model()
    model.cfg.diffusion.on = "image"
    cache, _ = make_cache(tmp_path / "c", model)
    entry = cache.get(image)
    assert [tuple(b) for b in entry.boxes] == [(0, 0, 100, 80)]
    assert cache.key(image).crops == 0  # the crop count does not matter in "image" mode


def test_key_changes_recompute(tmp_path, image):
    root = tmp_path / "c"
    model = micro_model()
    cache, counter = make_cache(root, model)
    base = cache.key(image)
    cache.get(image)

    seeded, c2 = make_cache(root, model, seed=1)
    more_crops, c3 = make_cache(root, model, crops=3)
    for other, cnt in ((seeded, c2), (more_crops, c3)):
        assert other.key(image) != base
        other.get(image)
        assert cnt.calls == 1

    model.cfg.diffusion.sample_steps = 3
    steps, c4 = make_cache(root, model)
    assert steps.key(image).steps == 3 and steps.key(image) != base
    model.cfg.diffusion.sample_steps = micro_config().diffusion.sample_steps

    with torch.no_grad():
        next(model.diffusion.parameters()).add_(0.01)
    reweighted, _ = make_cache(root, model)
    assert reweighted.key(image).weights_sha256 != base.weights_sha256

    Image.fromarray(photo(100, 80)[::-1].copy()).save(image)  # same path, new content
    assert cache.key(image).image_sha256 != base.image_sha256
    cache.get(image)
    assert counter.calls == 2


def test_temp_and_broken_files_are_ignored(tmp_path, image, caplog):
    cache, counter = make_cache(tmp_path / "c", micro_model())
    final = cache.path(cache.key(image))
    final.parent.mkdir(parents=True)
    temp = final.parent / f".{final.name}.abc123.tmp"  # what a run killed mid-write leaves
    temp.write_bytes(b"half an entry")
    assert cache.lookup(image) is None
    cache.get(image)
    assert counter.calls == 1 and final.is_file()

    final.write_bytes(final.read_bytes()[:100])  # a truncated entry (e.g. a copy cut short)
    with caplog.at_level(logging.WARNING):
        assert cache.fill([image]) == 1
    assert counter.calls == 2 and "recomputing" in caplog.text and cache.get(image).states.shape[0] == 4
    assert counter.calls == 2


def test_interrupted_write_leaves_nothing(tmp_path, image, monkeypatch):
    cache, _ = make_cache(tmp_path / "c", micro_model())

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.get(image)
    folder = cache.path(cache.key(image)).parent
    assert not list(folder.iterdir())


def test_no_diffusion_needs_no_cache(tmp_path, image):
    cache, counter = make_cache(tmp_path / "c", micro_model(use_diffusion=False))
    entry = cache.get(image)
    assert cache.fill([image]) == 0
    assert not cache.enabled and counter.calls == 0 and not (tmp_path / "c").exists()
    assert all(np.array_equal(entry.states[0], s) for s in entry.states[1:])


@pytest.mark.parametrize("use_diffusion", [True, False])
def test_compact_features_decode_to_model_features(use_diffusion):
    model = micro_model(use_diffusion=use_diffusion)
    layout = feature_layout(model)
    pooled, upsampled = layout.maps[0], layout.maps[1]
    assert pooled[1:] == (MICRO_GRID, MICRO_GRID) and upsampled[1] < MICRO_GRID  # both resampling paths
    states = torch.rand(3, 4 if use_diffusion else 1, 3, MICRO_CROP, MICRO_CROP).expand(3, 4, -1, -1, -1) * 2 - 1
    with torch.no_grad():
        rows = compact_features(model, states)
        direct = model.features(states)
    decoded = layout.decode(rows)
    assert rows.shape == (3, layout.size)
    assert torch.allclose(decoded.vcg, direct.vcg, atol=1e-5) and torch.allclose(decoded.vda, direct.vda, atol=1e-5)


def test_feature_cache(tmp_path, image):
    model = prepare_model(micro_model(), freeze_backbones=True)
    states, _ = make_cache(tmp_path / "c", model)
    features = FeatureCache(tmp_path / "f", model, states, flips=True)
    rows = features.get(image)
    assert rows.dtype == np.float16 and rows.shape == (2 * 2, features.layout.size)  # 2 crops x (plain, flipped)
    path = features.path(image)
    stamp = path.stat().st_mtime_ns
    assert features.fill([image]) == 0 and path.stat().st_mtime_ns == stamp
    entry = states.get(image)
    crop = torch.from_numpy(entry.crop(states.eval_boxes(entry)[0]))[None].float() / 127.5 - 1
    with torch.no_grad():
        expect = model.features(crop)
    got = features.layout.decode(torch.from_numpy(np.array(rows[:1])))
    assert torch.allclose(got.vcg, expect.vcg, atol=2e-2, rtol=1e-2)
    assert FeatureCache(tmp_path / "f", model, states, flips=False).path(image) != path

    with pytest.raises(ValueError, match="frozen"):
        FeatureCache(tmp_path / "f", prepare_model(micro_model(), freeze_backbones=False), states)
