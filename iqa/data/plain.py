"""Six plain, common distortions at 5 growing levels: what a user tries first on a photo.

The KADID-10k kinds (`iqa.data.distortions`) are tuned for 512x384 images; these are the everyday
operations (Gaussian blur, down-then-up resampling, contrast reduction, JPEG, white noise, impulse
noise) with parameters in the photo's own pixels, used by the levels test (`python -m iqa levels`)
and, beside the KADID kinds, by the ranking stream (`iqa.data.stream`). Same contract as KINDS:
`fn(image, param, rng)` on RGB uint8 (H, W, 3), deterministic for a seeded generator.
"""
from __future__ import annotations

import cv2
import numpy as np

from iqa.data.distortions import Distortion, _encode_decode

IMPULSE_SALT_SHARE = 0.5  # share of impulse-noise pixels set to white (the rest black)


def _clip8(x: np.ndarray) -> np.ndarray:
    """float 8-bit values -> rounded, clipped uint8."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def resample(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Downscale by `factor` (area average), then back up to the original size (bicubic)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def contrast(image: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    """Pull every pixel toward the image's mean grey by `gain` < 1 (flat, washed-out look)."""
    x = image.astype(np.float32)
    return _clip8(x.mean() + gain * (x - x.mean()))


def jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    return _encode_decode(image, "JPEG", quality=int(quality))


def noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of `sigma` 8-bit levels, independent per channel."""
    return _clip8(image.astype(np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * sigma)


def impulse(image: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper: a `density` share of pixels set to black or white (the same pixels grow with level)."""
    u = rng.random(image.shape[:2])
    salt = rng.random(image.shape[:2]) < IMPULSE_SALT_SHARE
    out = image.copy()
    hit = u < density
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def _plain(name, fn, levels, param) -> Distortion:
    return Distortion(name=name, group="plain", kadid_id=0, fn=fn, levels=tuple(levels), param=param)


PLAIN_KINDS: dict[str, Distortion] = {d.name: d for d in [
    _plain("blur", blur, (0.7, 1.2, 2, 3, 5), "Gaussian sigma px"),
    _plain("resample", resample, (1.5, 2, 3, 4, 6), "down-then-up factor"),
    _plain("contrast", contrast, (0.8, 0.65, 0.5, 0.35, 0.2), "gain toward the mean"),
    _plain("jpeg_q", jpeg, (60, 35, 20, 10, 5), "JPEG quality"),
    _plain("noise", noise, (4, 8, 15, 25, 40), "sigma (8-bit)"),
    _plain("impulse", impulse, (0.002, 0.006, 0.015, 0.03, 0.06), "density"),
]}


def all_kinds() -> dict[str, Distortion]:
    """The six plain kinds and the 25 KADID-10k kinds, by name (the names do not collide)."""
    from iqa.data.distortions import KINDS
    assert not set(KINDS) & set(PLAIN_KINDS)
    return {**PLAIN_KINDS, **KINDS}
