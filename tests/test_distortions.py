"""The 25 KADID-style distortion kinds: contract (shape, dtype, determinism) and what each does."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from iqa.data.distortions import KINDS, LEVELS, Distortion, distort

RANDOM_KINDS = ("motion_blur", "colour_shift", "white_noise", "white_noise_colour", "impulse_noise",
                "multiplicative_noise", "denoise", "jitter", "non_eccentricity_patch", "colour_block")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """(96, 128, 3) uint8: the astronaut, downscaled (rich colour, edges and flat areas)."""
    return cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)[16:112]


def test_registry_matches_kadid():
    assert len(KINDS) == 25
    assert sorted(d.kadid_id for d in KINDS.values()) == list(range(1, 26))
    assert {d.group for d in KINDS.values()} == {"blur", "colour", "compression", "noise", "brightness",
                                                 "spatial", "sharpness_contrast"}
    for name, d in KINDS.items():
        assert isinstance(d, Distortion) and d.name == name
        assert len(d.levels) == LEVELS and d.param


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_level_keeps_shape_and_changes_the_image(kind, photo):
    for level in range(1, LEVELS + 1):
        out = distort(photo, kind, level, np.random.default_rng(0))
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - photo).mean() > 0.05, f"{kind} level {level} is (almost) the identity"


@pytest.mark.parametrize("kind", list(KINDS))
def test_odd_small_sizes_work(kind):
    img = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert distort(img, kind, LEVELS, np.random.default_rng(0)).shape == img.shape


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_seed_same_output(kind, photo):
    a = distort(photo, kind, 3, np.random.default_rng(7))
    b = distort(photo, kind, 3, np.random.default_rng(7))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_random_kinds_depend_on_the_seed(kind, photo):
    assert not np.array_equal(distort(photo, kind, 4, np.random.default_rng(1)),
                              distort(photo, kind, 4, np.random.default_rng(2)))


def test_input_is_not_modified(photo):
    before = photo.copy()
    for kind in KINDS:
        distort(photo, kind, LEVELS, np.random.default_rng(0))
    assert np.array_equal(photo, before)


def test_bad_level_and_input_are_clear_errors(photo):
    with pytest.raises(ValueError, match="level 6"):
        distort(photo, "jpeg", 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown distortion kind"):
        distort(photo, "gaussian", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="RGB uint8"):
        distort(photo.astype(np.float32), "jpeg", 1, np.random.default_rng(0))


def test_hsv_saturation_zero_is_grey_and_keeps_value(photo):
    d = KINDS["colour_saturation_1"]
    assert d.levels[3] == 0
    grey = d(photo, 4, np.random.default_rng(0))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert np.array_equal(grey[..., 0], photo.max(axis=2))  # HSV value = max channel is kept
    half = d(photo, 1, np.random.default_rng(0))
    assert np.abs(half.max(axis=2).astype(int) - photo.max(axis=2)).max() <= 1


def test_quantizers_limit_the_values(photo):
    q = KINDS["quantization"]
    out = q(photo, LEVELS, np.random.default_rng(0))
    for c in range(3):
        assert len(np.unique(out[..., c])) <= q.levels[-1]
    cq = KINDS["colour_quantization"]
    out = cq(photo, LEVELS, np.random.default_rng(0))
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= cq.levels[-1]


def test_impulse_noise_hits_grow_with_level(photo):
    d = KINDS["impulse_noise"]
    hits = [d(photo, lv, np.random.default_rng(3)) != photo for lv in range(1, LEVELS + 1)]
    for lo, hi in zip(hits, hits[1:]):
        assert np.all(hi[lo])  # same generator state: a higher density hits a superset
    assert abs(hits[-1].mean() - d.levels[-1]) < 0.01


def test_blur_removes_detail_step_by_step(photo):
    lap = [cv2.Laplacian(distort(photo, "gaussian_blur", lv, np.random.default_rng(0)), cv2.CV_32F).var()
           for lv in range(1, LEVELS + 1)]
    assert all(b < a for a, b in zip(lap, lap[1:]))
