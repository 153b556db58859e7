"""Tests for iqa.peers: BRISQUE and NIQE rank clean photos above distorted ones, the scoring
interface contract holds, and bad input gives clear errors."""
from __future__ import annotations

import gzip
import math
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from iqa import peers
from iqa.peers import (PEERS, Brisque, BrisqueConfig, Niqe, NiqeConfig, PeerInputError, PeerMethod,
                       fit_aggd, halve_like_matlab, load_peer)

BLUR_SIGMA = 4.0  # "heavy" blur, px
NOISE_STD = 40.0  # "heavy" additive Gaussian noise, 0..255 scale
PHOTOS = {"astronaut": skdata.astronaut, "chelsea": skdata.chelsea}


def _blurred(rgb: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), BLUR_SIGMA)


def _noised(rgb: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, NOISE_STD, rgb.shape)
    return np.clip(rgb + noise, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def methods() -> dict[str, PeerMethod]:
    return {name: load_peer(name) for name in PEERS}


def test_registry_names_and_contract(methods):
    assert PEERS == ("brisque", "niqe")
    for name, method in methods.items():
        assert isinstance(method, PeerMethod)
        assert method.name == name
        assert method.higher_is_better is False
    assert isinstance(load_peer(" NIQE "), Niqe)
    assert isinstance(load_peer("Brisque"), Brisque)


def test_unknown_peer_name_lists_choices():
    with pytest.raises(ValueError, match=r"unknown peer method 'piqe'.*brisque, niqe"):
        load_peer("piqe")


@pytest.mark.parametrize("photo", sorted(PHOTOS))
@pytest.mark.parametrize("name", PEERS)
def test_clean_photo_ranks_above_blurred_and_noised(methods, name, photo):
    method = methods[name]
    clean = PHOTOS[photo]()
    raws = {kind: method.raw(img) for kind, img in
            (("clean", clean), ("blurred", _blurred(clean)), ("noised", _noised(clean)))}
    assert all(math.isfinite(v) for v in raws.values()), raws
    scores = {kind: method.score(img) for kind, img in
              (("clean", clean), ("blurred", _blurred(clean)), ("noised", _noised(clean)))}
    for kind in raws:
        assert scores[kind] == pytest.approx(-raws[kind])  # higher score = better
    assert scores["clean"] > scores["blurred"], scores
    assert scores["clean"] > scores["noised"], scores


@pytest.mark.parametrize("name", PEERS)
def test_path_pil_and_array_inputs_agree(methods, name, tmp_path):
    rgb = skdata.chelsea()
    path = tmp_path / "chelsea.png"
    Image.fromarray(rgb).save(path)
    method = methods[name]
    expected = method.raw(rgb)
    assert method.raw(path) == pytest.approx(expected)
    assert method.raw(str(path)) == pytest.approx(expected)
    assert method.raw(Image.fromarray(rgb)) == pytest.approx(expected)


@pytest.mark.parametrize("name", PEERS)
def test_bad_inputs_give_clear_errors(methods, name, tmp_path):
    method = methods[name]
    missing = tmp_path / "nope.png"
    with pytest.raises(PeerInputError, match="image file not found: .*nope.png"):
        method.raw(missing)
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    with pytest.raises(PeerInputError, match="junk.jpg: not an image file"):
        method.score(junk)
    rgb = skdata.chelsea()
    with pytest.raises(PeerInputError, match="uint8"):
        method.raw(rgb.astype(np.float32) / 255)
    with pytest.raises(PeerInputError, match=r"\(H, W, 3\)"):
        method.raw(rgb[..., 0])
    with pytest.raises(PeerInputError, match="unsupported image input of type list"):
        method.raw([[1, 2, 3]])
    flat = np.full((128, 128, 3), 120, np.uint8)
    with pytest.raises(PeerInputError, match="no usable texture"):
        method.raw(flat)


def test_niqe_rejects_images_smaller_than_a_patch(methods):
    small = skdata.chelsea()[:80, :200]
    with pytest.raises(PeerInputError, match="80 px.*>= 96|200x80 px.*>= 96"):
        methods["niqe"].raw(small)


def test_missing_parameter_files_say_what_to_do(tmp_path):
    with pytest.raises(PeerInputError, match="peer parameter file missing: .*restore"):
        Niqe(NiqeConfig(data_dir=tmp_path))
    with pytest.raises(PeerInputError, match="peer parameter file missing: .*restore"):
        Brisque(BrisqueConfig(data_dir=tmp_path))


def test_brisque_matches_opencv_compute_when_clamped(methods, tmp_path):
    """Our scaling + SVR path reproduces cv2.quality's own compute() on the shipped files."""
    model = tmp_path / "model.yml"
    with gzip.open(peers.PEER_DATA_DIR / peers.BRISQUE_MODEL_FILE, "rb") as src, open(model, "wb") as dst:
        shutil.copyfileobj(src, dst)
    range_file = peers.PEER_DATA_DIR / peers.BRISQUE_RANGE_FILE
    clamped = Brisque(BrisqueConfig(clamp=True))
    for rgb in (skdata.astronaut(), _blurred(skdata.astronaut())):
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        reference = cv2.quality.QualityBRISQUE_compute(bgr, str(model), str(range_file))[0]
        assert clamped.raw(rgb) == pytest.approx(reference, abs=1e-3)
    assert methods["brisque"].raw(_blurred(skdata.astronaut())) == pytest.approx(
        clamped.raw(_blurred(skdata.astronaut())))


def test_niqe_pristine_window_matches_our_gaussian(methods):
    niqe = methods["niqe"]
    ours = np.outer(niqe._window, niqe._window)
    np.testing.assert_allclose(ours, niqe.pristine.window, atol=1e-12)
    assert niqe.pristine.num_scales == 2


def test_fit_aggd_recovers_known_shapes():
    rng = np.random.default_rng(0)
    samples = np.stack([rng.normal(size=20000), rng.laplace(size=20000)])
    fit = fit_aggd(samples)
    assert fit.shape[0] == pytest.approx(2.0, abs=0.1)  # Gaussian
    assert fit.shape[1] == pytest.approx(1.0, abs=0.1)  # Laplacian
    np.testing.assert_allclose(fit.mean, 0.0, atol=0.05)  # symmetric
    np.testing.assert_allclose(fit.left_scale, fit.right_scale, rtol=0.05)


def test_halve_like_matlab_shape_and_constants():
    image = np.random.default_rng(0).random((97, 192)) * 255
    halved = halve_like_matlab(image)
    assert halved.shape == (49, 96)  # MATLAB: ceil(size * 0.5)
    np.testing.assert_allclose(halve_like_matlab(np.full((10, 12), 7.0)), 7.0)
    # Close to a plain 2x2 box average on a smooth ramp (the kernel is normalised and centred).
    ramp = np.add.outer(np.arange(40.0), np.arange(40.0))
    box = ramp.reshape(20, 2, 20, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(halve_like_matlab(ramp)[3:-3, 3:-3], box[3:-3, 3:-3], atol=1e-9)
