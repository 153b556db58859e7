import argparse

import cv2
import numpy as np
import pytest
import torch

from iqa.data.stream import CLEAN, Batch, SeriesStream, StreamConfig, add_diffusion_states, add_held_out_options, \
    held_out_from, held_out_photos, make_series, ordered_pairs, training_photos

from helpers import photo, tiny_model


def _photos(root, n=5):
    from PIL import Image
    root.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.roll(photo(200, 150), 30 * i, axis=1)).save(root / f"p{i}.png")
    return root


def test_series_has_clean_crop_then_distinct_levels_per_kind():
    cfg = StreamConfig(crop=64, kinds=("blur", "noise", "contrast"), kinds_per_series=2, levels_per_kind=3)
    s = make_series(photo(200, 150), cfg, np.random.default_rng(0), name="a")
    assert s.states.shape == (7, 1, 3, 64, 64) and s.states.dtype == np.uint8
    assert s.kind[0] == CLEAN and s.level[0] == 0 and s.mos[0] == pytest.approx(1.0, abs=1e-3)
    for k in set(s.kind[1:]):
        lv = s.level[s.kind == k]
        assert len(set(lv)) == 3 and all(1 <= v <= 5 for v in lv)
        assert np.all(np.diff(s.mos[s.kind == k]) < 0)  # pseudo-MOS falls with the level
    assert np.all(s.mos[1:] < s.mos[0])


def test_ordered_pairs_clean_first_and_within_kind_by_level():
    b = Batch(states=torch.zeros(6, 1, 3, 4, 4, dtype=torch.uint8), series=torch.tensor([0, 0, 0, 0, 1, 1]),
              kind=torch.tensor([CLEAN, 2, 2, 5, CLEAN, 2]), level=torch.tensor([0, 1, 3, 2, 0, 4]),
              mos=torch.zeros(6), local=torch.zeros(6, 1, 1))
    better, worse = ordered_pairs(b)
    pairs = set(zip(better.tolist(), worse.tolist()))
    assert pairs == {(0, 1), (0, 2), (0, 3), (1, 2), (4, 5)}


def test_only_the_chosen_part_is_drawn(tmp_path):
    root = _photos(tmp_path / "photos")
    parts = {p: {x.name for x in training_photos(StreamConfig(photos=str(root), part=p, ratios="3:1:1"))}
             for p in ("train", "val", "test")}
    assert sum(map(len, parts.values())) == 5 and len(parts["train"]) == 3
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["val"])
    with pytest.raises(ValueError, match="part"):
        training_photos(StreamConfig(photos=str(root), part="holdout", ratios="3:1:1"))
    every = training_photos(StreamConfig(photos=str(root), part="all", ratios="3:1:1"))
    assert len(every) == 5  # "all": a folder that holds one part already, unsplit
    assert held_out_photos(str(root), "train", "3:1:1", limit=2) == training_photos(
        StreamConfig(photos=str(root), part="train", ratios="3:1:1"))[:2]
    with pytest.raises(ValueError, match="part 'holdout'"):
        held_out_photos(str(root), "holdout", "3:1:1")


def test_held_out_options_reach_the_split(tmp_path):
    root = _photos(tmp_path / "photos")
    p = argparse.ArgumentParser()
    add_held_out_options(p, part="val")
    args = p.parse_args(["--photos", str(root), "--ratios", "3:1:1", "--split-seed", "4"])
    assert args.part == "val" and held_out_from(args) == held_out_photos(str(root), "val", "3:1:1", split_seed=4)
    tests = {tuple(held_out_from(p.parse_args(["--photos", str(root), "--ratios", "3:1:1", "--part", "test",
                                                "--split-seed", str(k)]))) for k in range(6)}
    assert len(tests) > 1  # the seed changes the split


def test_diffusion_states_are_added():
    cfg = StreamConfig(crop=48, kinds=("blur",), kinds_per_series=1, levels_per_kind=2)
    s = make_series(photo(120, 90), cfg, np.random.default_rng(0))
    s = add_diffusion_states(s, tiny_model().diffusion, torch.Generator().manual_seed(0))
    assert s.states.shape == (3, 4, 3, 48, 48) and s.states.dtype == np.uint8


def test_stream_workers_fill_batches_and_close(tmp_path):
    root = _photos(tmp_path / "photos")
    cfg = StreamConfig(photos=str(root), ratios="3:1:1", crop=48, kinds=("blur", "jpeg_q"), kinds_per_series=1,
                       levels_per_kind=2, buffer=3)
    with SeriesStream(cfg) as stream:
        b = stream.batch(2)
        assert b.states.shape == (6, 1, 3, 48, 48) and b.series.tolist() == [0, 0, 0, 1, 1, 1]
        assert len(ordered_pairs(b)[0]) == 6
    assert not any(p.is_alive() for p in stream.procs)


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="nosuch"):
        StreamConfig(kinds=("nosuch",)).kind_names()


def test_too_small_crop_is_refused():
    with pytest.raises(ValueError, match="at least 48"):
        StreamConfig(crop=32)


def test_plain_share_decides_how_often_plain_kinds_are_drawn():
    kinds = ("blur", "noise", "gaussian_blur", "white_noise")
    assert StreamConfig(kinds=kinds).kind_weights() == pytest.approx([0.25] * 4)
    w = StreamConfig(kinds=kinds, plain_share=0.8).kind_weights()
    assert w == pytest.approx([0.4, 0.4, 0.1, 0.1])
    cfg = StreamConfig(crop=64, kinds=kinds, plain_share=1.0, kinds_per_series=2, levels_per_kind=1)
    s = make_series(photo(200, 150), cfg, np.random.default_rng(0))
    assert {kinds[k] for k in s.kind[1:]} == {"blur", "noise"}
    with pytest.raises(ValueError, match="plain share"):
        StreamConfig(plain_share=1.5)


def test_local_quality_is_one_where_unchanged_and_averages_to_the_mos():
    from iqa.data.stream import local_quality
    ref = photo(64, 64)
    dam = ref.copy()
    dam[:, 32:] = cv2.GaussianBlur(ref, (0, 0), 3)[:, 32:]
    q = local_quality(dam, ref, mos=0.6, grid=4)
    assert q.shape == (4, 4) and q.mean() == pytest.approx(0.6, abs=0.05)
    assert q[:, :1].min() > 0.95 and q[:, 3:].max() < q[:, :1].min()  # the blurred half scores lower
    assert np.all(local_quality(ref, ref, mos=1.0, grid=4) == 1.0)


def test_region_damage_leaves_the_rest_of_the_crop_clean():
    cfg = StreamConfig(crop=64, grid=4, kinds=("noise",), kinds_per_series=1, levels_per_kind=2, region_share=1.0)
    s = make_series(photo(200, 150), cfg, np.random.default_rng(3))
    changed = np.any(s.states[1:, 0] != s.states[0, 0], axis=1)  # (2, 64, 64)
    ys, xs = np.nonzero(changed.any(0))
    box = np.zeros_like(changed[0])
    box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    assert 0.05 < box.mean() < 0.6 and changed.any(0).sum() > 0.8 * box.sum()  # one rectangle, both levels
    assert s.local.shape == (3, 4, 4) and s.local[2].min() <= s.local[1].min()
    with pytest.raises(ValueError, match="region share"):
        StreamConfig(region_share=-0.1)


def test_local_quality_is_flat_where_ssim_misses_the_damage():
    from iqa.data.stream import local_quality
    ref = photo(64, 64)
    tinted = np.clip(ref.astype(int) + [0, 0, 2], 0, 255).astype(np.uint8)  # SSIM (grey) hardly changes
    assert np.all(local_quality(tinted, ref, mos=0.5, grid=4) == 0.5)


def test_softened_base_is_the_series_clean_crop_but_labelled_against_the_photo():
    kinds = ("blur", "noise", "high_sharpen", "contrast_change")
    cfg = StreamConfig(crop=64, kinds=kinds, kinds_per_series=2, levels_per_kind=2, base_share=1.0,
                       base_blur=(1.0, 1.5), base_contrast=(0.8, 0.9), flip=False)
    plain = StreamConfig(crop=64, kinds=kinds, kinds_per_series=2, levels_per_kind=2, flip=False)
    rng = np.random.default_rng(5)
    s, ref = make_series(photo(200, 150), cfg, rng), make_series(photo(200, 150), plain, np.random.default_rng(5))
    assert np.abs(s.states[0, 0].astype(int) - ref.states[0, 0]).mean() > 1  # softer than the photo's crop
    assert s.kind[0] == CLEAN and s.mos[0] < 0.97 and np.all(s.mos[1:] < s.mos[0])
    names = cfg.kind_names()
    drawn = {names[k] for _ in range(10) for k in make_series(photo(200, 150), cfg, rng).kind[1:]}
    assert drawn == {"blur", "noise"}  # kinds that could undo the softening are left out
    assert cfg.kind_weights("soft")[2:].sum() == 0 and cfg.kind_weights()[2:].sum() > 0
    with pytest.raises(ValueError, match="base share"):
        StreamConfig(base_share=2)
    with pytest.raises(ValueError, match="base blur"):
        StreamConfig(base_contrast=(0.9, 0.5))


def test_grain_base_is_noisier_and_keeps_denoise_out():
    kinds = ("blur", "denoise")
    cfg = StreamConfig(crop=64, kinds=kinds, kinds_per_series=1, levels_per_kind=2, base_share=1.0,
                       base_grain_share=1.0, base_noise=(6.0, 6.0), base_jpeg=(90, 90), flip=False)
    plain = StreamConfig(crop=64, kinds=kinds, kinds_per_series=1, levels_per_kind=2, flip=False)
    s, ref = make_series(photo(200, 150), cfg, np.random.default_rng(1)), make_series(photo(200, 150), plain,
                                                                                      np.random.default_rng(1))
    grain = s.states[0, 0].astype(float) - ref.states[0, 0]
    assert 3 < grain.std() < 9 and s.mos[0] < 0.97  # the noise, labelled against the untouched photo
    assert all(cfg.kind_names()[k] == "blur" for k in s.kind[1:])
    with pytest.raises(ValueError, match="base JPEG"):
        StreamConfig(base_jpeg=(95, 200))
    with pytest.raises(ValueError, match="base grain share"):
        StreamConfig(base_grain_share=-1)


def test_retoned_photo_is_the_series_clean_crop_and_its_reference():
    kinds = ("blur", "noise")
    cfg = StreamConfig(crop=64, kinds=kinds, kinds_per_series=2, levels_per_kind=2, retone_share=1.0,
                       gamma=(1.6, 1.6), saturation=(0.3, 0.3), flip=False)
    plain = StreamConfig(crop=64, kinds=kinds, kinds_per_series=2, levels_per_kind=2, flip=False)
    s, ref = make_series(photo(200, 150), cfg, np.random.default_rng(3)), make_series(photo(200, 150), plain,
                                                                                      np.random.default_rng(3))
    retoned, untouched = s.states[0, 0].astype(float), ref.states[0, 0].astype(float)  # (3, H, W)
    assert retoned.mean() < untouched.mean() - 10  # gamma 1.6 darkens
    assert retoned.std(axis=0).mean() < untouched.std(axis=0).mean()  # channels closer together: less colour
    assert s.mos[0] > 0.99 and np.all(s.mos[1:] < s.mos[0])  # a pristine reference of its own
    with pytest.raises(ValueError, match="gamma"):
        StreamConfig(gamma=(0.0, 1.2))
    with pytest.raises(ValueError, match="retone share"):
        StreamConfig(retone_share=1.5)
