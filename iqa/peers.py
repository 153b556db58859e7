"""Classical no-reference IQA peers, BRISQUE and NIQE, behind one scoring interface.

Both run offline from the parameter files in `iqa/peer_data/` (provenance in its PROVENANCE.md):

- BRISQUE: OpenCV contrib's implementation (`cv2.quality`) with OpenCV's LIVE-trained SVR.
- NIQE: an implementation of the NIQE authors' MATLAB `computequality.m` (Mittal et al., IEEE SPL
  2013) with their pristine model, so values are comparable with published NIQE numbers.

Every method exposes `raw(image)` (its native value, lower = better for both) and `score(image)`
(= -raw, higher = better) so results tables rank all methods, the DiffV2IQA model included, the
same way. `image` is a path, a PIL image or an RGB uint8 array (H, W, 3).
"""
from __future__ import annotations

import abc
import functools
import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy.special import gammaln

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]

PEER_DATA_DIR = Path(__file__).resolve().parent / "peer_data"
BRISQUE_MODEL_FILE = "brisque_model_live.yml.gz"
BRISQUE_RANGE_FILE = "brisque_range_live.yml"
NIQE_PARAMS_FILE = "niqe_pris_params.npz"

# BRISQUE (OpenCV): features are scaled per column from [min, max] (range file rows) to this interval.
BRISQUE_FEATURE_INTERVAL = (-1.0, 1.0)
BRISQUE_OPENCV_CLAMP = (0.0, 100.0)  # what cv2.quality.QualityBRISQUE.compute clips its output to

# NIQE constants of the MATLAB release.
NIQE_FEATURES_PER_SCALE = 18  # AGGD (shape, scale) of MSCN + 4 orientations x (shape, mean, left, right)
NIQE_PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (rows, cols) circular shifts within a patch
AGGD_SHAPE_GRID = (0.2, 10.0, 0.001)  # start, stop (inclusive), step of the shape search
MATLAB_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)  # rgb2gray weights
YCBCR_Y = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0, 16.0)  # BT.601 Y of 8-bit YCbCr
CUBIC_A = -0.5  # Keys cubic kernel parameter of MATLAB imresize('bicubic')


class PeerInputError(ValueError):
    """An image or parameter file a peer method cannot use; the message says what to do."""


# ---------------------------------------------------------------------------------------- inputs


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Any accepted image input -> contiguous RGB uint8 array (H, W, 3).

    Files are read with PIL and their EXIF orientation applied (as a viewer shows them).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise PeerInputError(f"image file not found: {path}")
        try:
            with Image.open(path) as opened:
                return np.ascontiguousarray(ImageOps.exif_transpose(opened).convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise PeerInputError(f"{path}: not an image file PIL can read ({err})") from err
    if isinstance(image, Image.Image):
        return np.ascontiguousarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise PeerInputError(
                f"expected an RGB array of shape (H, W, 3), got shape {image.shape}; "
                "stack a grayscale image to 3 channels or drop an alpha channel first")
        if image.dtype != np.uint8:
            raise PeerInputError(
                f"expected a uint8 RGB array (values 0..255), got dtype {image.dtype}; for floats in "
                "[0, 1] pass (np.clip(x, 0, 1) * 255).round().astype(np.uint8)")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise PeerInputError(f"empty image of shape {image.shape}")
        return np.ascontiguousarray(image)
    raise PeerInputError(
        f"unsupported image input of type {type(image).__name__}; "
        "pass a file path, a PIL image or an RGB uint8 numpy array (H, W, 3)")


def _peer_data_file(data_dir: Path, name: str) -> Path:
    path = Path(data_dir) / name
    if not path.is_file():
        raise PeerInputError(
            f"peer parameter file missing: {path}; it ships with the iqa package "
            "(iqa/peer_data/, see PROVENANCE.md there): restore it from the repository")
    return path


# ------------------------------------------------------------------------------------- interface


class PeerMethod(abc.ABC):
    """A classical NR-IQA method with the scoring interface of the model's assessor."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]  # of `raw`; `score` is always higher = better

    @abc.abstractmethod
    def raw(self, image: ImageInput) -> float:
        """The method's native value for one image."""

    def score(self, image: ImageInput) -> float:
        """Quality with higher = better (the raw value, negated when lower is better)."""
        value = self.raw(image)
        return value if self.higher_is_better else -value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _no_texture(name: str) -> PeerInputError:
    return PeerInputError(
        f"{name}: the image has no usable texture (flat or nearly constant), so its natural-scene "
        "statistics are undefined; such images cannot be scored by this method")


def _finite(name: str, value: float) -> float:
    if not np.isfinite(value):
        raise _no_texture(name)
    return float(value)


# --------------------------------------------------------------------------------------- BRISQUE


@dataclass(frozen=True)
class BrisqueConfig:
    """BRISQUE options. `clamp=True` reproduces `cv2.quality.QualityBRISQUE.compute`, which clips to
    [0, 100]; the default keeps the SVR output unclipped (as the original release) so very clean
    images still rank among themselves instead of tying at 0."""

    data_dir: Path = PEER_DATA_DIR
    clamp: bool = False


class Brisque(PeerMethod):
    """BRISQUE (Mittal et al., IEEE TIP 2012): OpenCV's 36 NSS features -> LIVE-trained RBF SVR.

    Raw value: about 0 (pristine) to 100 (heavily distorted), the LIVE DMOS scale; lower = better.
    """

    name = "brisque"
    higher_is_better = False

    def __init__(self, config: BrisqueConfig | None = None) -> None:
        self.config = config or BrisqueConfig()
        self._svm, self._feature_min, self._feature_max = _load_brisque_model(self.config.data_dir)

    def features(self, image: ImageInput) -> np.ndarray:
        """OpenCV's BRISQUE feature vector (36,) float32 of the image's luma."""
        gray = cv2.cvtColor(to_rgb_array(image), cv2.COLOR_RGB2GRAY)
        try:
            return cv2.quality.QualityBRISQUE_computeFeatures(gray).reshape(-1)
        except cv2.error as err:
            raise PeerInputError(f"brisque: OpenCV could not compute features for a "
                                 f"{gray.shape[1]}x{gray.shape[0]} image ({err})") from err

    def raw(self, image: ImageInput) -> float:
        feats = self.features(image)
        if not np.all(np.isfinite(feats)):
            raise _no_texture(self.name)
        low, high = BRISQUE_FEATURE_INTERVAL
        scaled = low + (high - low) * (feats - self._feature_min) / (self._feature_max - self._feature_min)
        _, pred = self._svm.predict(scaled.reshape(1, -1).astype(np.float32))
        value = float(pred[0, 0])
        if self.config.clamp:
            value = float(np.clip(value, *BRISQUE_OPENCV_CLAMP))
        return _finite(self.name, value)


def _load_brisque_model(data_dir: Path) -> tuple[cv2.ml.SVM, np.ndarray, np.ndarray]:
    """Read the SVR and the feature range from memory (no temporary files): SVM, min (36,), max (36,)."""
    model_path = _peer_data_file(data_dir, BRISQUE_MODEL_FILE)
    range_path = _peer_data_file(data_dir, BRISQUE_RANGE_FILE)
    flags = cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY
    try:
        with gzip.open(model_path, "rt", encoding="ascii") as fh:
            model_storage = cv2.FileStorage(fh.read(), flags)
        svm = cv2.ml.SVM_create()
        svm.read(model_storage.getNode("opencv_ml_svm"))
        model_storage.release()
        range_storage = cv2.FileStorage(range_path.read_text(encoding="ascii"), flags)
        feature_range = range_storage.getNode("range").mat()
        range_storage.release()
    except (OSError, UnicodeDecodeError, cv2.error) as err:
        raise PeerInputError(f"cannot read the BRISQUE model {model_path} / {range_path} ({err}); "
                             "restore the files from the repository") from err
    if not svm.isTrained() or feature_range is None or feature_range.shape != (2, svm.getVarCount()):
        raise PeerInputError(f"BRISQUE model files {model_path} / {range_path} are inconsistent: "
                             "restore them from the repository")
    return svm, feature_range[0].astype(np.float32), feature_range[1].astype(np.float32)


# ------------------------------------------------------------------------------------------ NIQE


@dataclass(frozen=True)
class NiqeConfig:
    """NIQE options; defaults are the MATLAB release's.

    sharpness_threshold: keep only patches whose mean local deviation exceeds this fraction of the
      sharpest patch's. The release applies 0.75 when fitting the pristine model but scores test
      images on all patches (0.0), which is what published NIQE values use.
    luma: "gray" = MATLAB rgb2gray (the release), "ycbcr" = Y of 8-bit YCbCr (super-resolution papers).
    """

    data_dir: Path = PEER_DATA_DIR
    patch_size: int = 96
    window_size: int = 7
    window_sigma: float = 7.0 / 6.0
    mscn_stabilizer: float = 1.0  # C in (I - mu) / (sigma + C), on the 0..255 intensity scale
    sharpness_threshold: float = 0.0
    luma: str = "gray"


@dataclass(frozen=True)
class NiqePristineModel:
    """Multivariate Gaussian of pristine-patch features: mean (F,), covariance (F, F); F = 36."""

    mean: np.ndarray
    cov: np.ndarray
    window: np.ndarray = field(repr=False)  # (7, 7) weighting window stored with the model

    @property
    def num_scales(self) -> int:
        return self.mean.shape[0] // NIQE_FEATURES_PER_SCALE


@dataclass(frozen=True)
class AggdFit:
    """Asymmetric generalized Gaussian fits of n sample sets: shape, left and right scale, each (n,)."""

    shape: np.ndarray
    left_scale: np.ndarray
    right_scale: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Mean of each fitted distribution (n,)."""
        log_ratio = gammaln(2.0 / self.shape) - gammaln(1.0 / self.shape)
        return (self.right_scale - self.left_scale) * np.exp(log_ratio)


@functools.lru_cache(maxsize=1)
def _aggd_shape_table() -> tuple[np.ndarray, np.ndarray]:
    """Candidate shapes (K,) and their ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) (K,)."""
    start, stop, step = AGGD_SHAPE_GRID
    shapes = np.linspace(start, stop, int(round((stop - start) / step)) + 1)
    ratios = np.exp(2.0 * gammaln(2.0 / shapes) - gammaln(1.0 / shapes) - gammaln(3.0 / shapes))
    return shapes, ratios


def fit_aggd(samples: np.ndarray) -> AggdFit:
    """Moment-matching AGGD fit of each row of `samples` (n, m), by grid search as in the release.

    Rows without negative or positive values give NaN parameters (the release does the same).
    """
    x = samples.astype(np.float64, copy=False)
    neg, pos = x < 0, x > 0
    sq = x * x
    with np.errstate(divide="ignore", invalid="ignore"):
        left_std = np.sqrt((sq * neg).sum(1) / neg.sum(1))
        right_std = np.sqrt((sq * pos).sum(1) / pos.sum(1))
        skew = left_std / right_std
        r_hat = np.abs(x).mean(1) ** 2 / sq.mean(1)
        r_norm = r_hat * (skew**3 + 1) * (skew + 1) / (skew**2 + 1) ** 2
    shapes, ratios = _aggd_shape_table()
    valid = np.isfinite(r_norm)
    shape = np.full(x.shape[0], np.nan)
    shape[valid] = shapes[np.argmin(np.abs(ratios[None, :] - r_norm[valid, None]), axis=1)]
    with np.errstate(invalid="ignore"):
        to_scale = np.exp(0.5 * (gammaln(1.0 / shape) - gammaln(3.0 / shape)))
    return AggdFit(shape=shape, left_scale=left_std * to_scale, right_scale=right_std * to_scale)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = CUBIC_A (MATLAB imresize 'bicubic')."""
    a, ax = CUBIC_A, np.abs(x)
    near = (a + 2) * ax**3 - (a + 3) * ax**2 + 1
    far = a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a
    return np.where(ax <= 1, near, np.where(ax <= 2, far, 0.0))


@functools.lru_cache(maxsize=1)
def _halving_taps() -> np.ndarray:
    """8 weights of MATLAB imresize(x, 0.5) (bicubic, antialiased) around each output sample (8,).

    Output sample o sits at input coordinate 2o + 0.5; its taps are inputs 2o - 3 .. 2o + 4.
    """
    scale = 0.5
    offsets = np.arange(-3, 5) - 0.5  # tap position minus output position, in input pixels
    taps = scale * _cubic(scale * offsets)
    return taps / taps.sum()


def halve_like_matlab(image: np.ndarray) -> np.ndarray:
    """imresize(image, 0.5) of MATLAB (bicubic, antialiased, symmetric borders): (H, W) -> (ceil(H/2), ceil(W/2)).

    Neither OpenCV nor scikit-image reproduce MATLAB's antialiasing kernel, and NIQE's second
    scale depends on it.
    """
    taps = _halving_taps()
    out = image.astype(np.float64, copy=False)
    for axis in (0, 1):
        n_out = -(-out.shape[axis] // 2)
        pad = [(0, 0), (0, 0)]
        pad[axis] = (3, 4)
        padded = np.moveaxis(np.pad(out, pad, mode="symmetric"), axis, 0)
        acc = sum(w * padded[t : t + 2 * n_out : 2] for t, w in enumerate(taps))
        out = np.moveaxis(acc, 0, axis)
    return out


def rgb_to_luma(rgb: np.ndarray, luma: str = "gray") -> np.ndarray:
    """RGB uint8 (H, W, 3) -> luma float64 (H, W) on the 0..255 scale, as MATLAB computes it."""
    x = rgb.astype(np.float64)
    if luma == "gray":  # rgb2gray on uint8 returns rounded uint8
        return np.floor(x @ np.array(MATLAB_RGB2GRAY) + 0.5)
    if luma == "ycbcr":
        return x @ np.array(YCBCR_Y[:3]) + YCBCR_Y[3]
    raise ValueError(f"unknown luma {luma!r}; use 'gray' (NIQE release) or 'ycbcr'")


def _patches(image: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping size x size patches in row-major order: (H, W) -> (n, size, size)."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    blocks = image[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return blocks.transpose(0, 2, 1, 3).reshape(-1, size, size)


def _patch_features(mscn_patches: np.ndarray) -> np.ndarray:
    """NIQE's 18 features of each MSCN patch: (n, p, p) -> (n, 18)."""
    n = mscn_patches.shape[0]
    flat = mscn_patches.reshape(n, -1)
    fit = fit_aggd(flat)
    columns = [fit.shape, (fit.left_scale + fit.right_scale) / 2]
    for shift in NIQE_PAIR_SHIFTS:
        pairs = flat * np.roll(mscn_patches, shift, axis=(1, 2)).reshape(n, -1)
        fit = fit_aggd(pairs)
        columns += [fit.shape, fit.mean, fit.left_scale, fit.right_scale]
    return np.stack(columns, axis=1)


class Niqe(PeerMethod):
    """NIQE (Mittal et al., IEEE SPL 2013): distance of the image's patch statistics to a Gaussian
    model of pristine natural-image patches. Raw value: about 2..3 for sharp photos, larger = worse.
    """

    name = "niqe"
    higher_is_better = False

    def __init__(self, config: NiqeConfig | None = None) -> None:
        self.config = config or NiqeConfig()
        if self.config.patch_size % 2:
            raise ValueError(f"NIQE patch_size must be even (halved at scale 2), got {self.config.patch_size}")
        rgb_to_luma(np.zeros((1, 1, 3), np.uint8), self.config.luma)  # validate early
        self.pristine = _load_niqe_model(self.config.data_dir)
        self._window = cv2.getGaussianKernel(self.config.window_size, self.config.window_sigma, cv2.CV_64F)

    def mscn(self, luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean-subtracted contrast-normalised coefficients and local deviation, both (H, W) float64."""
        blur = functools.partial(cv2.sepFilter2D, ddepth=cv2.CV_64F, kernelX=self._window,
                                 kernelY=self._window, borderType=cv2.BORDER_REPLICATE)
        mu = blur(luma)
        sigma = np.sqrt(np.abs(blur(luma * luma) - mu * mu))
        return (luma - mu) / (sigma + self.config.mscn_stabilizer), sigma

    def features(self, image: ImageInput) -> np.ndarray:
        """Per-patch NIQE features (n, 18 * scales); rows are patches of patch_size at scale 1."""
        luma = rgb_to_luma(to_rgb_array(image), self.config.luma)
        size = self.config.patch_size
        if luma.shape[0] < size or luma.shape[1] < size:
            raise PeerInputError(f"niqe: the image is {luma.shape[1]}x{luma.shape[0]} px; NIQE needs at "
                                 f"least one {size}x{size} patch, so both sides must be >= {size}")
        rows, cols = luma.shape[0] // size, luma.shape[1] // size
        luma = luma[: rows * size, : cols * size]
        per_scale, sharpness = [], None
        for scale in range(self.pristine.num_scales):
            mscn, sigma = self.mscn(luma)
            patch = size // 2**scale
            per_scale.append(_patch_features(_patches(mscn, patch)))
            if scale == 0:
                sharpness = _patches(sigma, patch).mean(axis=(1, 2))
            luma = halve_like_matlab(luma)
        feats = np.concatenate(per_scale, axis=1)
        if self.config.sharpness_threshold > 0:
            feats = feats[sharpness > self.config.sharpness_threshold * sharpness.max()]
        return feats

    def raw(self, image: ImageInput) -> float:
        feats = self.features(image)
        feats = feats[np.all(np.isfinite(feats), axis=1)]  # MATLAB nanmean / nancov drop such patches
        if feats.shape[0] == 0:
            raise _no_texture(self.name)
        mean = feats.mean(axis=0)
        cov = np.cov(feats, rowvar=False) if feats.shape[0] > 1 else np.zeros_like(self.pristine.cov)
        pooled = (self.pristine.cov + cov) / 2
        inv = np.linalg.pinv(pooled, rcond=max(pooled.shape) * np.finfo(np.float64).eps)  # MATLAB pinv tolerance
        diff = self.pristine.mean - mean
        return _finite(self.name, float(np.sqrt(max(diff @ inv @ diff, 0.0))))


def _load_niqe_model(data_dir: Path) -> NiqePristineModel:
    path = _peer_data_file(data_dir, NIQE_PARAMS_FILE)
    try:
        with np.load(path) as npz:
            model = NiqePristineModel(mean=npz["mu_pris_param"].reshape(-1).astype(np.float64),
                                      cov=npz["cov_pris_param"].astype(np.float64),
                                      window=npz["gaussian_window"].astype(np.float64))
    except (OSError, KeyError, ValueError) as err:
        raise PeerInputError(f"cannot read the NIQE pristine model {path} ({err}); "
                             "restore it from the repository") from err
    n = model.mean.shape[0]
    if n % NIQE_FEATURES_PER_SCALE or model.cov.shape != (n, n):
        raise PeerInputError(f"NIQE pristine model {path} has mean {model.mean.shape} and covariance "
                             f"{model.cov.shape}; expected (36,) and (36, 36)")
    return model


# -------------------------------------------------------------------------------------- registry

_PEER_CLASSES: dict[str, type[PeerMethod]] = {cls.name: cls for cls in (Brisque, Niqe)}
PEERS: tuple[str, ...] = tuple(_PEER_CLASSES)


def load_peer(name: str) -> PeerMethod:
    """The peer method called `name` ("brisque" or "niqe", case-insensitive) with default settings."""
    key = str(name).strip().lower()
    if key not in _PEER_CLASSES:
        raise ValueError(f"unknown peer method {name!r}; choose one of: {', '.join(PEERS)}")
    return _PEER_CLASSES[key]()
