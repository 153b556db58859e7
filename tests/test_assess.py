import dataclasses

import numpy as np
import pytest
import torch

from iqa.assess import Assessor, cell_overlap, crop_boxes, load, restore_windows, scaled_keep_steps
from iqa.config import preset
from iqa.images import ImageError
from iqa.model import DiffV2IQA
from tests.helpers import photo, tiny_model


def test_crop_boxes_fit_and_align():
    boxes = crop_boxes(500, 333, 224, 5, 8)
    assert len(boxes) == 5 and len(set(boxes)) == 5
    for x0, y0, x1, y1 in boxes:
        assert x0 % 8 == 0 and y0 % 8 == 0 and 0 <= x0 and x1 <= 500 and y1 <= 333 and x1 - x0 == 224
    assert crop_boxes(224, 224, 224, 4, 8) == [(0, 0, 224, 224)]


@pytest.mark.parametrize("size", [(224, 224), (500, 333)])
def test_tiny_result_shapes(size):
    w, h = size
    a = Assessor(tiny_model(), device="cpu")
    r = a.assess(photo(w, h), crops=3)
    cell, g = a.cell, a.cfg.vcg.grid
    assert r.image.shape == r.restored.shape == (h, w, 3)
    assert [s.name for s in r.states] == ["y1", "y2"] and r.states[0].alpha_bar > r.states[1].alpha_bar
    gh, gw = -(-h // cell), -(-w // cell)
    for maps in (r.vcg, r.vda):
        assert maps.score.shape == maps.weight.shape == (gh, gw) and maps.boxes.shape == (gh, gw, 4)
        for x0, y0, _, _ in r.crops:  # every cell under a crop has a value
            assert np.isfinite(maps.score[y0 // cell:y0 // cell + g, x0 // cell:x0 // cell + g]).all()
    assert np.isclose(r.score, r.s1 + r.s2, atol=1e-5) and len(r.crop_scores) == len(r.crops)
    assert {"diffusion", "backbones", "vcg", "vda", "total"} <= set(r.timings)


@pytest.mark.parametrize("size", [(320, 240)])  # one size: the paper model takes ~20 s to build and run on CPU
def test_paper_preset_shapes(size):
    cfg = preset("paper")
    cfg.vcg.backbone.pretrained = cfg.vda.backbone.pretrained = "none"
    cfg.diffusion.sample_steps, cfg.diffusion.keep_steps = 2, (1, 2)  # shapes only; 50 steps take minutes on CPU
    torch.manual_seed(0)
    w, h = size
    r = Assessor(DiffV2IQA(cfg), device="cpu").assess(photo(w, h), crops=1)
    assert r.restored.shape == (h, w, 3) and r.vcg.score.shape == (-(-h // 8), -(-w // 8))
    assert r.s1 is not None and r.s2 is not None


def test_seeded_determinism():
    a = Assessor(tiny_model(), device="cpu")
    img = photo(240, 240)
    r1, r2, r3 = a.assess(img, seed=1), a.assess(img, seed=1), a.assess(img, seed=2)
    assert np.array_equal(r1.states[1].image, r2.states[1].image) and r1.score == r2.score
    assert not np.array_equal(r1.states[1].image, r3.states[1].image)


def test_small_image_is_upscaled_with_notice():
    r = Assessor(tiny_model(), device="cpu").assess(photo(100, 80), crops=1)
    assert min(r.image.shape[:2]) == 224 and "upscaled" in r.notices[0]


def test_batch_reports_bad_file_and_continues(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    out = Assessor(tiny_model(), device="cpu").assess_batch([photo(230, 230), bad, photo(240, 230)], crops=1)
    assert isinstance(out[1], ImageError) and "bad.jpg" in str(out[1])
    assert all(hasattr(o, "score") for o in (out[0], out[2]))


def test_no_diffusion_ablation_uses_input_for_all_states():
    r = Assessor(tiny_model(use_diffusion=False), device="cpu").assess(photo(230, 230), crops=1)
    assert np.array_equal(r.restored, r.image)


def test_steps_override_scales_kept_steps():
    cfg = preset("paper")
    assert scaled_keep_steps(cfg, 50) == (5, 10) and scaled_keep_steps(cfg, 10) == (1, 2)
    with pytest.raises(ValueError):
        scaled_keep_steps(dataclasses.replace(cfg), 1)


def test_out_of_memory_is_reported_as_image_error_and_batch_goes_on(monkeypatch):
    a = Assessor(tiny_model(), device="cpu")
    features = a.model.features

    def flaky(states):  # the CPU allocator's failure is a plain RuntimeError
        if states.shape[-1] == 224 and flaky.fail:
            flaky.fail = False
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return features(states)

    flaky.fail = True
    monkeypatch.setattr(a.model, "features", flaky)
    out = a.assess_batch([photo(230, 230), photo(240, 230)], crops=1)
    assert isinstance(out[0], ImageError) and "out of memory on cpu" in str(out[0])
    assert hasattr(out[1], "score")
    monkeypatch.setattr(a.model, "features", lambda states: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # other errors are not disguised as bad input
        a.assess(photo(230, 230), crops=1)


def test_noise_seed_follows_the_image_and_the_seed():
    from iqa.assess import noise_seed
    a, b = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    assert noise_seed(a, 0) == noise_seed(a.clone(), 0)
    assert len({noise_seed(a, 0), noise_seed(b, 0), noise_seed(a, 1)}) == 3


def test_same_image_and_settings_come_from_memory():
    a = Assessor(tiny_model(), device="cpu")
    img = photo(256, 240)
    first = a.assess(img, crops=2)
    again = a.assess(img, crops=2)
    assert again.cached and not first.cached and again.score == first.score
    other = a.assess(img, crops=2, seed=5)
    assert not other.cached and other.score != first.score  # another seed: other noise in y1/y2
    a.bf16 = ("vcg",)
    assert not a.assess(img, crops=2).cached  # other pipeline settings: computed again, not served from memory
    a.cfg.diffusion.unet_scale = 2  # the U-Net at half resolution: states still at the image's size
    half = a.assess(img, crops=2)
    assert not half.cached and half.restored.shape == img.shape and half.states[1].image.shape == img.shape
    a.cfg.diffusion.full_res_steps = 1
    assert not a.assess(img, crops=2).cached


def test_load_checks_the_diffusion_scale():
    with pytest.raises(ValueError, match="unet_scale"):
        load("tiny", allow_random_backbone=True, diffusion_scale=0)
    assert load("tiny", allow_random_backbone=True, diffusion_scale=2).model.diffusion.cfg.unet_scale == 2
    with pytest.raises(ValueError, match="full_res_steps"):
        load("tiny", allow_random_backbone=True, full_res_steps=-1)
    assert load("tiny", allow_random_backbone=True, full_res_steps=1).model.diffusion.cfg.full_res_steps == 1


def test_channels_last_changes_no_score():
    img = photo(256, 240)
    plain = Assessor(tiny_model(), device="cpu", bf16=()).assess(img, crops=2).score
    fast = Assessor(tiny_model(), device="cpu", channels_last=True, bf16=()).assess(img, crops=2).score
    assert fast == pytest.approx(plain, abs=1e-5)


def test_folded_batchnorm_changes_no_score():
    img = photo(256, 240)
    plain = Assessor(tiny_model(), device="cpu", bf16=()).assess(img, crops=2)
    fast = Assessor(tiny_model(), device="cpu", bf16=(), fold_batchnorm=True).assess(img, crops=2)
    assert fast.score == pytest.approx(plain.score, abs=1e-5)
    assert np.allclose(fast.vcg.score, plain.vcg.score, atol=1e-5, equal_nan=True)


def test_folds_batchnorm_only_where_the_backbones_run_in_float32():
    assert not Assessor(tiny_model(), device="cpu", bf16=()).model.batchnorm_folded  # a live model: never by default
    assert Assessor(tiny_model(), device="cpu", bf16=(), fold_batchnorm=None).model.batchnorm_folded
    assert load("tiny", allow_random_backbone=True, bf16=()).model.batchnorm_folded
    assert not load("tiny", allow_random_backbone=True, bf16=("backbones",)).model.batchnorm_folded
    assert load("tiny", allow_random_backbone=True, bf16=("backbones",), fold_batchnorm=True).model.batchnorm_folded
    assert not load("tiny", allow_random_backbone=True, bf16=(), fold_batchnorm=False).model.batchnorm_folded


def test_bf16_stages_keep_the_scores_close_and_unquantised():
    img = photo(256, 240)
    plain = Assessor(tiny_model(), device="cpu", bf16=()).assess(img, crops=2)
    fast = Assessor(tiny_model(), device="cpu", bf16=("diffusion", "vcg")).assess(img, crops=2)
    assert fast.score == pytest.approx(plain.score, abs=0.02)
    patch = fast.vcg.score[np.isfinite(fast.vcg.score)]
    assert not np.array_equal(patch, torch.tensor(patch).bfloat16().float().numpy())  # heads stay float32
    with pytest.raises(ValueError, match="unknown stage"):
        Assessor(tiny_model(), device="cpu", bf16=("maps",))


def test_restore_windows_share_overlapping_pixels():
    overlapping = [(0, 0, 224, 224), (160, 0, 384, 224), (0, 96, 224, 320)]
    assert restore_windows(overlapping, "region") == [(0, 0, 384, 320)]  # 122880 px < 3 x 50176
    spread = [(0, 0, 224, 224), (800, 0, 1024, 224)]
    assert restore_windows(spread, "region") == spread  # the bounding box would be larger
    assert restore_windows(overlapping, "crops") == overlapping
    with pytest.raises(ValueError, match="diffusion.on"):
        restore_windows(spread, "tiles")


def test_region_and_crops_restore_the_same_windows_alike():
    """One starting-noise field per image: restoring the crops' region or each crop differs only by the
    network's view of the window edges, far less than another noise seed."""
    img = photo(320, 240)
    model = tiny_model()
    a = Assessor(model, device="cpu", bf16=())
    model.cfg.diffusion.on = "crops"
    crops = a.assess(img, crops=2)
    model.cfg.diffusion.on = "region"
    a._recent.clear()
    region, reseeded = a.assess(img, crops=2), a.assess(img, crops=2, seed=1)
    inside = np.s_[16:208, 112:208]  # inside both crops, away from their edges
    y2 = [r.states[1].image[inside].astype(int) for r in (crops, region, reseeded)]
    near, far = np.abs(y2[1] - y2[0]).mean(), np.abs(y2[2] - y2[1]).mean()
    assert near < far / 4, (near, far)


@pytest.mark.parametrize("size", [(512, 384), (1000, 700), (224, 300), (451, 300), (670, 225)])
def test_tiles_cover_every_pixel(size):
    w, h = size
    boxes = crop_boxes(w, h, 224, 0, 16)
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        assert (x0 % 16 == 0 or x1 == w) and (y0 % 16 == 0 or y1 == h) and x1 <= w and y1 <= h
        covered[y0:y1, x0:x1] = True
    assert len(boxes) == -(-w // 224) * -(-h // 224) and covered.all()


def test_tile_maps_cover_every_cell_and_weigh_off_grid_crops_by_overlap():
    a = Assessor(tiny_model(), device="cpu")
    r = a.assess(photo(250, 236), crops=0)  # sides off the 16 px grid: the last crops end flush with the edge
    assert r.vcg.coverage == 1.0 and [b[:2] for b in r.crops] == [(0, 0), (26, 0), (0, 12), (26, 12)]
    cell = a.cell
    ax = cell_overlap(16, 250, cell, 26, a.cfg.vcg.grid)  # image cell 15 is 10 px wide, inside crop cell 13
    assert ax[15].tolist() == [0] * 13 + [10] and ax[1, 0] == 6 and ax[2, 0] == 10 and ax[2, 1] == 6
    assert ax.sum() == 224 and (ax.sum(0) == cell).all()  # each crop cell shares all its pixels
