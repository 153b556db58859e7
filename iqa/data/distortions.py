"""The 25 KADID-10k distortion kinds, each at 5 increasing levels.

Every kind is a pure function `fn(image, param, rng) -> image` on RGB uint8 arrays (H, W, 3); the
output has the same shape and dtype. Randomness comes only from the `numpy.random.Generator` passed
in, so a kind is deterministic for a seeded generator. Random kinds draw the same random numbers
whatever the level, so with one seed the levels of a kind are one pattern at growing strength
(salt-and-pepper pixels, colour blocks and moved patches of a level include those of the levels
below).

Level parameters follow the KADID-10k generator (Lin, Hosu, Saupe, QoMEX 2019: 81 references of
512x384, 25 kinds x 5 levels; level values as in the public KADIS-700k code, imdist_generator.m)
where they are sensible. Deliberate changes:
- no level is the identity: gaussian blur starts at sigma 0.5 (not 0.1), LAB saturation at x1.5
  (not x1); mean shift and contrast change no longer pass through 0. Those two pick their direction
  (up or down) at random per call and the level sets the size, so quality falls with level;
- colour shift smears the green plane over 0..shift px with edge weights that grow with the shift
  (KADID translates it), so the top levels stay distinguishable (see `colour_shift`);
- brighten stops at bend 0.8 (KADID 1.1 whites out bright photos); contrast gains are 1 +- amount;
- white noise in a colour component adds noise to Cb and Cr only (variance 0.0005..0.008);
  denoise is noise of sigma 10..45 (8-bit) cleaned by OpenCV non-local means; jitter is one
  bilinear remap (KADID: five small warps); quantization uses equally spaced levels (KADID: Otsu);
- sizes in pixels (colour blocks, moved patches) are given for KADID's 512x384 and scale with the
  square root of the image area, so a small crop gets the same fraction of damaged area.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from PIL import Image

DistortionFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

KADID_AREA = 512 * 384  # image area the pixel-size parameters are given for
LEVELS = 5

# Fixed details of individual kinds (the level parameter is the varying one).
MOTION_ANGLE_RANGE = 180.0  # degrees; motion direction is uniform over this range
KERNEL_SUPERSAMPLE = 8  # sub-pixel samples per axis when rasterising a blur kernel
COLOUR_SHIFT_EDGE_SIGMA = 4.0  # smoothing of the edge map that weights the shifted channel
COLOUR_SHIFT_CLIP_PERCENT = 1.0  # edge-map percentiles clipped on each side before normalising
COLOUR_SHIFT_CHANNEL = 1  # green channel is displaced
COLOUR_SHIFT_SPREAD_PX = 6.0  # edge weights are multiplied by 1 + shift / this (fringes reach further)
DENOISE_TEMPLATE = 7  # OpenCV non-local-means template window (px)
DENOISE_SEARCH = 21  # OpenCV non-local-means search window (px)
NONECC_PATCH = 16  # moved patch side at KADID_AREA (px)
NONECC_MAX_OFFSET = 8  # how far a patch moves, each axis, at KADID_AREA (px)
COLOUR_BLOCK = 32  # colour block side at KADID_AREA (px)
SHARPEN_SIGMA = 1.0  # Gaussian of the unsharp mask on lightness
DIRECTION_UP_PROB = 0.5  # chance mean shift / contrast change go up (else down)


@dataclass(frozen=True)
class Distortion:
    """One distortion kind: `levels[i]` is the parameter of level i + 1 (1 = mildest).

    `monotone`: quality is expected to fall as the level rises (true for every kind here).
    `param`: what the level parameter means, for documentation and the contact sheet.
    """

    name: str
    group: str
    kadid_id: int
    fn: DistortionFn
    levels: tuple[float, ...]
    param: str
    monotone: bool = True

    def __call__(self, image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
        """Apply level `level` (1-based) to `image` (H, W, 3) uint8 -> (H, W, 3) uint8."""
        if not 1 <= level <= len(self.levels):
            raise ValueError(f"{self.name}: level {level} is outside 1..{len(self.levels)}")
        _check_image(image)
        out = self.fn(image, self.levels[level - 1], rng)
        assert out.shape == image.shape and out.dtype == np.uint8, (self.name, out.shape, out.dtype)
        return out


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")


# ---------------------------------------------------------------- helpers

def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 image -> float32 in [0, 1]."""
    return image.astype(np.float32) / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8, rounded and clipped."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 CIELAB (L in 0..100)."""
    return cv2.cvtColor(to_float(image), cv2.COLOR_RGB2Lab)


def _from_lab(lab: np.ndarray) -> np.ndarray:
    return to_uint8(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB))


def _area_scale(image: np.ndarray) -> float:
    """Linear size factor of `image` relative to KADID's 512x384."""
    return math.sqrt(image.shape[0] * image.shape[1] / KADID_AREA)


def _scaled_px(px: float, image: np.ndarray) -> int:
    return max(1, round(px * _area_scale(image)))


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(image, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)


def _supersampled_kernel(radius: float, inside: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Normalised kernel of side 2 * ceil(radius) + 1 whose cells hold the covered fraction of `inside`."""
    r = math.ceil(radius)
    n = (2 * r + 1) * KERNEL_SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / KERNEL_SUPERSAMPLE - (r + 0.5)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    mask = inside(xx, yy).astype(np.float32)
    k = mask.reshape(2 * r + 1, KERNEL_SUPERSAMPLE, 2 * r + 1, KERNEL_SUPERSAMPLE).mean(axis=(1, 3))
    return k / k.sum()


def _tone_curve(x: np.ndarray, bend: float) -> np.ndarray:
    """Quadratic tone curve through (0, 0) and (1, 1) with y(0.5) = 0.5 + bend / 2; output clipped."""
    return np.clip(x + 2.0 * bend * x * (1.0 - x), 0.0, 1.0)


def _encode_decode(image: np.ndarray, fmt: str, **params) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **params)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _random_direction(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < DIRECTION_UP_PROB else -1.0


# ---------------------------------------------------------------- blur

def gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Isotropic Gaussian blur of standard deviation `sigma` px."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)


def lens_blur(image: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus blur: convolution with an anti-aliased disk of `radius` px."""
    return _filter(image, _supersampled_kernel(radius, lambda x, y: x * x + y * y <= radius * radius))


def motion_blur(image: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Linear motion blur: a line of length 2 * `radius` + 1 px at a random angle."""
    theta = math.radians(rng.uniform(0.0, MOTION_ANGLE_RANGE))
    c, s = math.cos(theta), math.sin(theta)
    half = radius + 0.5

    def on_line(x, y):
        along, across = x * c + y * s, -x * s + y * c
        return (np.abs(along) <= half) & (np.abs(across) <= 0.5)

    return _filter(image, _supersampled_kernel(half, on_line))


# ---------------------------------------------------------------- colour

def colour_diffusion(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Chroma bleeding: the LAB a/b channels are Gaussian-blurred (`sigma` px), lightness kept."""
    lab = _to_lab(image)
    lab[..., 1:] = cv2.GaussianBlur(lab[..., 1:], (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)
    return _from_lab(lab)


def colour_shift(image: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Channel misregistration near edges: green is smeared over `shift` px in a random direction.

    The green plane becomes the mean of its copies displaced by 0..`shift` px (a one-sided line
    kernel), blended in where the smoothed edge map is strong, with a weight that grows with the
    shift. Fringes widen and spread with the level; a pure translation stops hurting the FR labels
    once it exceeds the edge width (~6 px), which left levels 3-5 in arbitrary order.
    """
    x = to_float(image)
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
    gy, gx = np.gradient(grey)
    edges = cv2.GaussianBlur(np.hypot(gx, gy), (0, 0), sigmaX=COLOUR_SHIFT_EDGE_SIGMA)
    lo, hi = np.percentile(edges, [COLOUR_SHIFT_CLIP_PERCENT, 100.0 - COLOUR_SHIFT_CLIP_PERCENT])
    weight = np.clip((edges - lo) / max(hi - lo, 1e-12) * (1.0 + shift / COLOUR_SHIFT_SPREAD_PX), 0.0, 1.0)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    c, s = math.cos(theta), math.sin(theta)

    def on_segment(px, py):
        along, across = px * c + py * s, -px * s + py * c
        return (along >= -0.5) & (along <= shift + 0.5) & (np.abs(across) <= 0.5)

    ch = x[..., COLOUR_SHIFT_CHANNEL]
    moved = _filter(ch, _supersampled_kernel(shift + 0.5, on_segment))
    x[..., COLOUR_SHIFT_CHANNEL] = weight * moved + (1.0 - weight) * ch
    return to_uint8(x)


def colour_quantization(image: np.ndarray, colours: float, rng: np.random.Generator) -> np.ndarray:
    """Palette reduction to `colours` colours (median cut) with Floyd-Steinberg dithering."""
    pal = Image.fromarray(image).quantize(colors=int(colours), method=Image.Quantize.MEDIANCUT,
                                          dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(pal.convert("RGB"), dtype=np.uint8).copy()


def colour_saturation_hsv(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """HSV saturation times `factor` (hue and value kept; < 0 gives complementary tints).

    For fixed hue and value each RGB channel is V * (1 - S * k), linear in S, so scaling S is
    the blend V + factor * (RGB - V) with V = max(R, G, B): exact, without a colour-space round trip.
    """
    x = to_float(image)
    v = x.max(axis=2, keepdims=True)
    return to_uint8(v + factor * (x - v))


def colour_saturation_lab(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """LAB chroma times `factor` (> 1: oversaturation); colours leaving the gamut are clipped."""
    lab = _to_lab(image)
    lab[..., 1:] *= factor
    return _from_lab(lab)


# ---------------------------------------------------------------- compression

def jpeg2000(image: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG 2000 (OpenJPEG via Pillow, irreversible wavelet) at compression ratio `ratio`:1."""
    return _encode_decode(image, "JPEG2000", quality_mode="rates", quality_layers=[float(ratio)],
                          irreversible=True)


def jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Baseline JPEG (libjpeg via Pillow, 4:2:0) at quality `quality`."""
    return _encode_decode(image, "JPEG", quality=int(quality), subsampling="4:2:0")


# ---------------------------------------------------------------- noise

def white_noise(image: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of `variance` (image in [0, 1]), independent per RGB channel."""
    z = rng.standard_normal(image.shape, dtype=np.float32)
    return to_uint8(to_float(image) + math.sqrt(variance) * z)


def white_noise_colour(image: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of `variance` (in [0, 1] units) on the Cb and Cr components of YCbCr only."""
    ycc = cv2.cvtColor(to_float(image), cv2.COLOR_RGB2YCrCb)
    z = rng.standard_normal(ycc.shape[:2] + (2,), dtype=np.float32)
    ycc[..., 1:] += math.sqrt(variance) * z
    return to_uint8(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB))


def impulse_noise(image: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise: a fraction `density` of the channel values set to 0 or 255.

    Drawn by hand (not skimage's random_noise) so that a higher density hits a superset of the
    values a lower one hits with the same generator state.
    """
    u = rng.random(image.shape, dtype=np.float32)
    salt = rng.random(image.shape, dtype=np.float32) < 0.5
    hit = u < density
    out = image.copy()
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def multiplicative_noise(image: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Speckle noise x + x * n with n Gaussian of `variance`."""
    x = to_float(image)
    z = rng.standard_normal(image.shape, dtype=np.float32)
    return to_uint8(x + x * math.sqrt(variance) * z)


def denoise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of std `sigma` (8-bit units), then OpenCV non-local-means denoising tuned to it.

    What is left is the denoiser's signature: smeared texture, waxy flat areas, residual blotches.
    """
    z = rng.standard_normal(image.shape, dtype=np.float32)
    noisy = np.clip(np.rint(image.astype(np.float32) + sigma * z), 0, 255).astype(np.uint8)
    return cv2.fastNlMeansDenoisingColored(noisy, None, h=float(sigma), hColor=float(sigma),
                                           templateWindowSize=DENOISE_TEMPLATE,
                                           searchWindowSize=DENOISE_SEARCH)


# ---------------------------------------------------------------- brightness

def brighten(image: np.ndarray, bend: float, rng: np.random.Generator) -> np.ndarray:
    """Concave tone curve on each RGB channel (mid-grey goes to 0.5 + `bend` / 2)."""
    return to_uint8(_tone_curve(to_float(image), bend))


def darken(image: np.ndarray, bend: float, rng: np.random.Generator) -> np.ndarray:
    """Convex tone curve on each RGB channel (mid-grey goes to 0.5 - `bend` / 2)."""
    return to_uint8(_tone_curve(to_float(image), -bend))


def mean_shift(image: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Constant `shift` (image in [0, 1]) added to every channel, up or down at random; clipped."""
    return to_uint8(to_float(image) + _random_direction(rng) * shift)


# ---------------------------------------------------------------- spatial

def jitter(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Every pixel fetched from a random nearby position (Gaussian offsets of `std` px, bilinear)."""
    h, w = image.shape[:2]
    d = rng.standard_normal((2, h, w), dtype=np.float32) * std
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + d[0], gy + d[1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


def non_eccentricity_patch(image: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """`count` small patches copied onto a slightly displaced position (local content misplacement)."""
    out = image.copy()
    h, w = image.shape[:2]
    p = min(_scaled_px(NONECC_PATCH, image), h, w)
    off = _scaled_px(NONECC_MAX_OFFSET, image)
    for _ in range(int(count)):
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        dy, dx = rng.integers(-off, off + 1, size=2)
        ty, tx = int(np.clip(y + dy, 0, h - p)), int(np.clip(x + dx, 0, w - p))
        out[ty:ty + p, tx:tx + p] = out[y:y + p, x:x + p].copy()
    return out


def pixelate(image: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Area-downscale by `scale`, then nearest-neighbour upscale back (visible pixel blocks)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def quantization(image: np.ndarray, steps: float, rng: np.random.Generator) -> np.ndarray:
    """Each channel quantised to `steps` equally spaced grey levels (banding, false contours)."""
    n = int(steps) - 1
    return to_uint8(np.rint(to_float(image) * n) / n)


def colour_block(image: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """`count` uniform squares of random colour pasted at random positions."""
    out = image.copy()
    h, w = image.shape[:2]
    p = min(_scaled_px(COLOUR_BLOCK, image), h, w)
    for _ in range(int(count)):
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        out[y:y + p, x:x + p] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return out


# ---------------------------------------------------------------- sharpness and contrast

def high_sharpen(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Unsharp mask of strength `amount` on LAB lightness (overshoot halos, amplified noise)."""
    lab = _to_lab(image)
    light = lab[..., 0]
    blur = cv2.GaussianBlur(light, (0, 0), sigmaX=SHARPEN_SIGMA, borderType=cv2.BORDER_REFLECT_101)
    lab[..., 0] = np.clip(light + amount * (light - blur), 0.0, 100.0)
    return _from_lab(lab)


def contrast_change(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Linear contrast about the mean grey: gain 1 + `amount` (up) or 1 - `amount` (down), at random."""
    x = to_float(image)
    mean = float(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).mean())
    gain = 1.0 + _random_direction(rng) * amount
    return to_uint8(mean + gain * (x - mean))


# ---------------------------------------------------------------- registry

def _kind(name, group, kadid_id, fn, levels, param) -> Distortion:
    return Distortion(name=name, group=group, kadid_id=kadid_id, fn=fn, levels=tuple(levels), param=param)


KINDS: dict[str, Distortion] = {d.name: d for d in [
    _kind("gaussian_blur", "blur", 1, gaussian_blur, (0.5, 1, 2, 3, 5), "sigma px"),
    _kind("lens_blur", "blur", 2, lens_blur, (1, 2, 4, 6, 8), "disk radius px"),
    _kind("motion_blur", "blur", 3, motion_blur, (1, 2, 4, 6, 10), "half length px"),
    _kind("colour_diffusion", "colour", 4, colour_diffusion, (1, 3, 6, 8, 12), "chroma sigma px"),
    _kind("colour_shift", "colour", 5, colour_shift, (1, 3, 6, 8, 12), "smear px"),
    _kind("colour_quantization", "colour", 6, colour_quantization, (64, 48, 32, 16, 8), "colours"),
    _kind("colour_saturation_1", "colour", 7, colour_saturation_hsv, (0.4, 0.2, 0.1, 0.0, -0.4), "HSV S factor"),
    _kind("colour_saturation_2", "colour", 8, colour_saturation_lab, (1.5, 2, 3, 6, 9), "LAB chroma factor"),
    _kind("jpeg2000", "compression", 9, jpeg2000, (16, 32, 45, 120, 400), "ratio"),
    _kind("jpeg", "compression", 10, jpeg, (43, 36, 24, 7, 4), "quality"),
    _kind("white_noise", "noise", 11, white_noise, (0.001, 0.002, 0.003, 0.005, 0.01), "variance"),
    _kind("white_noise_colour", "noise", 12, white_noise_colour, (0.0005, 0.001, 0.002, 0.004, 0.008), "CbCr variance"),
    _kind("impulse_noise", "noise", 13, impulse_noise, (0.001, 0.005, 0.01, 0.02, 0.03), "density"),
    _kind("multiplicative_noise", "noise", 14, multiplicative_noise, (0.001, 0.005, 0.01, 0.02, 0.05), "variance"),
    _kind("denoise", "noise", 15, denoise, (10, 15, 20, 30, 45), "noise sigma (8-bit)"),
    _kind("brighten", "brightness", 16, brighten, (0.1, 0.2, 0.35, 0.55, 0.8), "curve bend"),
    _kind("darken", "brightness", 17, darken, (0.05, 0.1, 0.2, 0.4, 0.8), "curve bend"),
    _kind("mean_shift", "brightness", 18, mean_shift, (0.04, 0.08, 0.12, 0.16, 0.2), "shift size"),
    _kind("jitter", "spatial", 19, jitter, (0.1, 0.2, 0.45, 1.1, 2.2), "offset std px"),
    _kind("non_eccentricity_patch", "spatial", 20, non_eccentricity_patch, (20, 40, 60, 80, 100), "patches"),
    _kind("pixelate", "spatial", 21, pixelate, (0.8, 0.6, 0.45, 0.33, 0.25), "scale"),
    _kind("quantization", "spatial", 22, quantization, (20, 16, 13, 10, 7), "levels per channel"),
    _kind("colour_block", "spatial", 23, colour_block, (2, 4, 6, 8, 10), "blocks"),
    _kind("high_sharpen", "sharpness_contrast", 24, high_sharpen, (1, 2, 3, 6, 12), "unsharp amount"),
    _kind("contrast_change", "sharpness_contrast", 25, contrast_change, (0.1, 0.2, 0.35, 0.5, 0.65), "amount"),
]}
assert len(KINDS) == 25 and all(len(d.levels) == LEVELS for d in KINDS.values())


def distort(image: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply distortion `kind` at `level` (1..5) to an RGB uint8 image (H, W, 3)."""
    if kind not in KINDS:
        raise ValueError(f"unknown distortion kind {kind!r}; choose from: {', '.join(KINDS)}")
    return KINDS[kind](image, level, rng)
