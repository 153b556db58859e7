"""An online stream of ranked synthetic series, for training that learns order (`train-rank`).

A *series* is one random crop of one training photo: the clean crop and `kinds_per_series` kinds,
each at `levels_per_kind` distinct levels, so that within a kind quality must fall with the level and
the clean crop must beat every distortion (RankIQA's supervision, no opinion scores needed). Every
series draws a fresh photo, scale (so crops see content at the sizes `assess` sees), crop position,
flip, kinds, levels and realisation; each image gets its full-reference pseudo-MOS on the fly, and,
for the full model, its diffusion states x, y0, y1, y2.

Worker processes make series and a bounded replay buffer hands batches to the trainer, which thus
never waits once the buffer holds a few series. Everything is seeded: a worker's generator is seeded
by (seed, worker index, the step the run resumes from), so a resumed run draws new series.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from iqa.data.distortions import to_float, to_uint8
from iqa.data.plain import PLAIN_KINDS, all_kinds, blur, contrast, jpeg, noise
from iqa.data.splits import split_groups
from iqa.data.pseudo_mos import pseudo_mos
from iqa.data.sources import find_sources
from iqa.data.workers import worker_context
from iqa.images import load_image

DISTORT_MARGIN = 16  # px distorted around the crop and cut off, so filters see real content at the edges
QUEUE_SERIES = 4  # series a worker may have made ahead of the trainer
ALL_PHOTOS = "all"  # the part that takes every photo of the folder, unsplit
CLEAN = -1  # kind index of the clean crop in a series
MIN_CROP = 48  # the pseudo-MOS metrics (VIF) need at least 41 px
REGION_SIDE = (0.25, 0.75)  # side of a damaged region, as a share of the crop side
SSIM_SIGMA = 1.5  # Gaussian window of the local SSIM map (Wang et al. 2004)
MAX_LOCAL_GAIN = 4.0  # beyond this stretch of the SSIM map onto the pseudo-MOS, the local target is flat
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 grey, the axis of saturation
BASE_UNSAFE_KINDS = {"soft": ("high_sharpen", "contrast_change"), "grain": ("denoise",)}  # may undo the base


@dataclass
class StreamConfig:
    """What the stream draws. `photos`: a folder of pristine photos, split by name like `splits`
    (`ratios`, `split_seed`), of which only `part` is used ("all": every photo of the folder, for a
    folder that already holds only one part, e.g. the training photos copied onto a GPU machine).
    `scale`: range of the factor the photo is resized by before cropping (1 = its own size).
    `kinds`: names from `iqa.data.plain.all_kinds()` (empty = all 31). `plain_share`: the chance that
    a drawn kind is one of the six plain kinds (the levels test's), the rest spread evenly over the
    others; None draws all kinds evenly.
    `region_share`: the chance that a kind damages only a random rectangle of the crop (the same
    rectangle at each of its levels, so the order still holds), which teaches the patch maps where.
    `grid`: side of the model's token grid; each image's local quality target is pooled to it.
    `base_share`: the chance that a series starts from a degraded photo instead of the photo itself: its
    own clean crop, ranked above its distortions, while every pseudo-MOS is still measured against the
    untouched photo. It teaches that a distortion lowers quality whatever the starting point (a held-out
    photo may be softer, flatter or grainier than any training photo). A base is "soft" (Gaussian blur
    of a sigma in `base_blur` px, contrast pulled toward the mean by a gain in `base_contrast`) or, with
    chance `base_grain_share`, "grain" (white noise of a sigma in `base_noise` 8-bit levels, then JPEG at
    a quality in `base_jpeg`: a camera's grain and compression). Kinds that could undo a base
    (`BASE_UNSAFE_KINDS`) are not drawn for its series.
    `retone_share`: the chance that a series' photo is first re-toned (`retone`: a gamma drawn
    log-uniformly from `gamma`, > 1 darker; colour saturation scaled by a factor from `saturation`); the
    re-toned crop is then the series' clean crop *and* its pseudo-MOS reference, a different but still
    pristine photo: more exposures and colours than the 30 training photos hold."""

    photos: str = ""
    part: str = "train"
    ratios: str = "7:1:2"
    split_seed: int = 0
    crop: int = 224
    scale: tuple[float, float] = (0.5, 1.0)
    kinds: tuple[str, ...] = ()
    kinds_per_series: int = 3
    plain_share: float | None = None
    region_share: float = 0.0
    grid: int = 14
    levels_per_kind: int = 3
    flip: bool = True
    base_share: float = 0.0
    base_blur: tuple[float, float] = (0.3, 1.5)
    base_contrast: tuple[float, float] = (0.7, 1.0)
    base_grain_share: float = 0.0
    base_noise: tuple[float, float] = (1.0, 4.0)
    base_jpeg: tuple[int, int] = (70, 95)
    retone_share: float = 0.0
    gamma: tuple[float, float] = (0.7, 1.5)
    saturation: tuple[float, float] = (0.5, 1.3)
    buffer: int = 48
    workers: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.crop < MIN_CROP:
            raise ValueError(f"crop {self.crop}: at least {MIN_CROP} px (the pseudo-MOS metrics need it)")
        if not 1 <= self.levels_per_kind <= 5 or self.kinds_per_series < 1:
            raise ValueError(f"kinds per series ({self.kinds_per_series}) must be >= 1 and levels per kind "
                             f"({self.levels_per_kind}) 1-5")
        if not 0 <= self.region_share <= 1:
            raise ValueError(f"region share {self.region_share}: must be between 0 and 1")
        if self.plain_share is not None and not 0 <= self.plain_share <= 1:
            raise ValueError(f"plain share {self.plain_share}: must be between 0 and 1")
        for name in ("base_share", "base_grain_share", "retone_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name.replace('_', ' ')} {getattr(self, name)}: must be between 0 and 1")
        if not 0 <= self.base_noise[0] <= self.base_noise[1] or not 1 <= self.base_jpeg[0] <= self.base_jpeg[1] <= 100:
            raise ValueError(f"base noise {self.base_noise} must be 0 <= low <= high (8-bit levels) and base JPEG "
                             f"quality {self.base_jpeg} 1 <= low <= high <= 100")
        if not 0 <= self.base_blur[0] <= self.base_blur[1] or not 0 < self.base_contrast[0] <= self.base_contrast[1] <= 1:
            raise ValueError(f"base blur {self.base_blur} must be 0 <= low <= high px and base contrast "
                             f"{self.base_contrast} 0 < low <= high <= 1")
        if not 0 < self.gamma[0] <= self.gamma[1] or not 0 <= self.saturation[0] <= self.saturation[1]:
            raise ValueError(f"gamma {self.gamma} must be 0 < low <= high and saturation {self.saturation} "
                             f"0 <= low <= high")

    def kind_names(self) -> list[str]:
        names = list(self.kinds) or list(all_kinds())
        unknown = sorted(set(names) - set(all_kinds()))
        if unknown:
            raise ValueError(f"unknown distortion kind(s) {', '.join(unknown)}; choose from: {', '.join(all_kinds())}")
        return names

    def kind_weights(self, base: str | None = None) -> np.ndarray:
        """(len(kind_names()),) probabilities of drawing each kind, from `plain_share`; `base`: for a
        series on a "soft" or "grain" base (none of its `BASE_UNSAFE_KINDS`)."""
        names = self.kind_names()
        plain = np.array([n in PLAIN_KINDS for n in names])
        if self.plain_share is None or plain.all() or not plain.any():
            w = np.full(len(names), 1 / len(names))
        else:
            w = np.where(plain, self.plain_share / plain.sum(), (1 - self.plain_share) / (~plain).sum())
        if base is not None:
            safe = np.array([n not in BASE_UNSAFE_KINDS[base] for n in names])
            w = w * safe if safe.any() else w
        return w / w.sum()


@dataclass
class Series:
    """One ranked series of N = 1 + kinds x levels crops.

    states: (N, S, 3, c, c) uint8, S = 4 (x, y0, y1, y2) or 1 (x only, without diffusion);
    kind: (N,) index into the stream's kind names, CLEAN for the clean crop; level: (N,) 0 = clean;
    mos: (N,) pseudo-MOS in [0, 1]; local: (N, g, g) local quality on the same scale (`local_quality`);
    photo: the photo's name."""

    states: np.ndarray
    kind: np.ndarray
    level: np.ndarray
    mos: np.ndarray
    local: np.ndarray
    photo: str


@dataclass
class Batch:
    """Series stacked for the trainer: states (B, 4 or 1, 3, c, c) uint8; series (B,) index of the
    series each row belongs to; kind, level, mos (B,); local (B, g, g)."""

    states: torch.Tensor
    series: torch.Tensor
    kind: torch.Tensor
    level: torch.Tensor
    mos: torch.Tensor
    local: torch.Tensor


def training_photos(cfg: StreamConfig) -> list[Path]:
    """The photos of `cfg.part` of the name split of `cfg.photos`."""
    sources = find_sources(Path(cfg.photos))
    if cfg.part == ALL_PHOTOS:
        return [s.path for s in sources]
    parts = split_groups([s.name for s in sources], cfg.ratios, cfg.split_seed)
    if cfg.part not in parts:
        raise ValueError(f"part {cfg.part!r} is not one of {', '.join(parts)} for ratios {cfg.ratios}, "
                         f"or {ALL_PHOTOS!r}")
    chosen = set(parts[cfg.part])
    return [s.path for s in sources if s.name in chosen]


def held_out_photos(folder: str, part: str, ratios: str, split_seed: int = 0, limit: int = 0) -> list[Path]:
    """`training_photos` of one part, for the tests that score held-out photos: the first `limit` when > 0,
    and a ValueError naming the folder when it is missing or the part holds none."""
    if not Path(folder).is_dir():
        raise ValueError(f"--photos {folder}: no such folder; give the folder of pristine photos to split")
    photos = training_photos(StreamConfig(photos=folder, part=part, ratios=ratios, split_seed=split_seed))
    photos = photos[:limit] if limit else photos
    if not photos:
        raise ValueError(f"{folder}: no photos in the {part!r} part")
    return photos


def add_held_out_options(p, part: str = "test") -> None:
    """--photos, --part, --ratios, --split-seed and --limit: the held-out photos a test scores."""
    s = StreamConfig()
    p.add_argument("--photos", required=True, help="folder of pristine photos (split by name as `splits` does)")
    p.add_argument("--part", default=part,
                   help=f"part of the split to use (train, val or test; {ALL_PHOTOS}: every photo, unsplit)")
    p.add_argument("--ratios", default=s.ratios, help="train:val:test split of the photos")
    p.add_argument("--split-seed", type=int, default=s.split_seed, help="seed of the photo split")
    p.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")


def add_stream_options(p: argparse.ArgumentParser, s: StreamConfig) -> None:
    """The options of the series stream (`StreamConfig`): photos' split, kinds, levels, bases, workers."""
    p.add_argument("--region-share", type=float, default=s.region_share,
                   help="chance that a kind damages only a random rectangle of the crop")
    p.add_argument("--kinds", nargs="*", default=[], metavar="KIND", help="distortion kinds (default: all 31)")
    p.add_argument("--base-share", type=float, default=s.base_share,
                   help="chance that a series starts from a degraded photo (soft or grain), ranked above its own "
                        "distortions; pseudo-MOS still against the untouched photo (0: off)")
    p.add_argument("--base-grain-share", type=float, default=s.base_grain_share,
                   help="chance that such a base is grain (noise, then JPEG) rather than soft (blur, lower contrast)")
    p.add_argument("--base-noise", type=float, nargs=2, default=s.base_noise, metavar=("LOW", "HIGH"),
                   help="range of the noise sigma (8-bit levels) of a grain base")
    p.add_argument("--base-jpeg", type=int, nargs=2, default=s.base_jpeg, metavar=("LOW", "HIGH"),
                   help="range of the JPEG quality of a grain base")
    p.add_argument("--base-blur", type=float, nargs=2, default=s.base_blur, metavar=("LOW", "HIGH"),
                   help="range of the Gaussian sigma (px) that softens a base")
    p.add_argument("--base-contrast", type=float, nargs=2, default=s.base_contrast, metavar=("LOW", "HIGH"),
                   help="range of the contrast gain (toward the mean) of a base")
    p.add_argument("--retone-share", type=float, default=s.retone_share,
                   help="chance that a series' photo is first re-toned (gamma, saturation): "
                        "a new clean crop and reference")
    p.add_argument("--gamma", type=float, nargs=2, default=s.gamma, metavar=("LOW", "HIGH"),
                   help="range of a re-toning gamma")
    p.add_argument("--saturation", type=float, nargs=2, default=s.saturation, metavar=("LOW", "HIGH"),
                   help="range of a re-toning saturation factor")
    p.add_argument("--plain-share", type=float, default=None,
                   help="chance that a drawn kind is one of the six plain kinds (default: all kinds evenly)")
    p.add_argument("--kinds-per-series", type=int, default=s.kinds_per_series, help="kinds in each series")
    p.add_argument("--levels-per-kind", type=int, default=s.levels_per_kind, help="distinct levels of each kind")
    p.add_argument("--crop", type=int, default=s.crop, help="crop side in pixels")
    p.add_argument("--ratios", default=s.ratios, help="train:val:test split of the photos")
    p.add_argument("--split-seed", type=int, default=s.split_seed, help="seed of the photo split")
    p.add_argument("--buffer", type=int, default=s.buffer, help="series held in the replay buffer")
    p.add_argument("--workers", type=int, default=s.workers, help="processes making series")
    p.add_argument("--part", default=s.part,
                   help="part of the photos' name split to train on (all: every photo of --photos, for a "
                        "folder that holds only training photos)")


def held_out_from(args) -> list[Path]:
    """`held_out_photos` of the options `add_held_out_options` added."""
    return held_out_photos(args.photos, args.part, args.ratios, args.split_seed, args.limit)


def _scaled_window(photo: np.ndarray, crop: int, scale: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A random (crop + 2 * margin)-square window of the photo resized by a random factor in `scale`
    (never below the size the window needs)."""
    side = crop + 2 * DISTORT_MARGIN
    h, w = photo.shape[:2]
    lo = max(scale[0], side / min(h, w))
    s = float(rng.uniform(lo, max(lo, scale[1])))
    if abs(s - 1) > 1e-3:
        nw, nh = max(side, round(w * s)), max(side, round(h * s))
        photo = cv2.resize(photo, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        h, w = nh, nw
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return np.ascontiguousarray(photo[y:y + side, x:x + side])


def local_quality(image: np.ndarray, reference: np.ndarray, mos: float, grid: int) -> np.ndarray:
    """(grid, grid) local quality of `image` against `reference` ((c, c, 3) uint8) on the pseudo-MOS
    scale: the SSIM map (grey, Gaussian window) averaged per cell, mapped affinely so that an unchanged
    cell scores 1 and the cells' mean equals `mos`; clipped to [0, 1]. Where SSIM barely sees a damage
    the pseudo-MOS does see (colour kinds), the map would be stretched into noise: the target is then
    `mos` everywhere."""
    from skimage.metrics import structural_similarity
    grey = [cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64) for a in (image, reference)]
    _, smap = structural_similarity(grey[0], grey[1], data_range=255, gaussian_weights=True,
                                    sigma=SSIM_SIGMA, use_sample_covariance=False, full=True)
    cells = cv2.resize(smap, (grid, grid), interpolation=cv2.INTER_AREA)  # mean per cell
    loss = 1 - cells
    mean_loss = float(loss.mean())
    if mean_loss < 1e-3 or (1 - mos) / mean_loss > MAX_LOCAL_GAIN:  # SSIM misses this damage (e.g. colour)
        return np.full((grid, grid), mos, dtype=np.float32)
    return np.clip(1 - loss * (1 - mos) / mean_loss, 0, 1).astype(np.float32)


def _region(side: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """A random rectangle of a (side, side) crop, each edge REGION_SIDE of the side."""
    h, w = (int(rng.uniform(*REGION_SIDE) * side) for _ in range(2))
    y, x = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
    return slice(y, y + h), slice(x, x + w)


def degrade_base(window: np.ndarray, base: str, cfg: StreamConfig, rng: np.random.Generator) -> np.ndarray:
    """A random "soft" (blurred, lower contrast) or "grain" (noise, then JPEG) version of an RGB uint8
    window, the starting point of a series (see `StreamConfig`)."""
    if base == "soft":
        sigma, gain = rng.uniform(*cfg.base_blur), rng.uniform(*cfg.base_contrast)
        return contrast(blur(window, sigma, rng) if sigma > 0 else window, gain, rng)
    grainy = noise(window, rng.uniform(*cfg.base_noise), rng)
    return jpeg(grainy, int(rng.integers(cfg.base_jpeg[0], cfg.base_jpeg[1] + 1)), rng)


def retone(window: np.ndarray, cfg: StreamConfig, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 window under another gamma and colour saturation (see `StreamConfig.retone_share`)."""
    gamma = float(np.exp(rng.uniform(*np.log(cfg.gamma))))
    x = to_float(window) ** gamma
    grey = x @ LUMA[:, None]
    return to_uint8(grey + rng.uniform(*cfg.saturation) * (x - grey))


def make_series(photo: np.ndarray, cfg: StreamConfig, rng: np.random.Generator, name: str = "") -> Series:
    """One series (states of x only) from an RGB uint8 photo; see the module docstring."""
    kinds = all_kinds()
    names = cfg.kind_names()
    window = _scaled_window(photo, cfg.crop, cfg.scale, rng)
    if cfg.flip and rng.random() < 0.5:
        window = np.ascontiguousarray(window[:, ::-1])
    if cfg.retone_share > 0 and rng.random() < cfg.retone_share:
        window = retone(window, cfg, rng)
    m, c = DISTORT_MARGIN, cfg.crop
    reference = window[m:m + c, m:m + c]
    base = None
    if cfg.base_share > 0 and rng.random() < cfg.base_share:
        base = "grain" if rng.random() < cfg.base_grain_share else "soft"
        window = degrade_base(window, base, cfg, rng)
    images, kind_ix, levels = [window[m:m + c, m:m + c]], [CLEAN], [0]
    weights = cfg.kind_weights(base)
    drawn = rng.choice(len(names), size=min(cfg.kinds_per_series, int((weights > 0).sum())), replace=False, p=weights)
    for k in drawn:
        d = kinds[names[k]]
        realisation = int(rng.integers(2 ** 31))  # one random pattern at growing strength
        region = _region(c, rng) if rng.random() < cfg.region_share else None
        for lv in sorted(rng.choice(np.arange(1, len(d.levels) + 1), size=cfg.levels_per_kind, replace=False)):
            out = d(window, int(lv), np.random.default_rng(realisation))[m:m + c, m:m + c]
            if region is not None:
                out, damaged = images[0].copy(), out
                out[region] = damaged[region]
            images.append(out)
            kind_ix.append(int(k))
            levels.append(int(lv))
    stack = np.stack(images)
    mos = np.array([p.mos for p in pseudo_mos(stack, reference)], dtype=np.float32)
    local = np.stack([local_quality(im, reference, float(q), cfg.grid) for im, q in zip(stack, mos)])
    return Series(states=stack.transpose(0, 3, 1, 2)[:, None].copy(), kind=np.array(kind_ix),
                  level=np.array(levels), mos=mos, local=local, photo=name)


@torch.no_grad()
def diffusion_states(x: torch.Tensor, diffusion, generator: torch.Generator | None, steps: int | None = None,
                     keep_steps: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, 3, c, c) uint8 crops -> (N, 4, 3, c, c) uint8 x, y0, y1, y2 on x's device (sampler settings from
    the network's config unless given). Made in the stream's workers, or by the trainer on its GPU."""
    x = x.float() / 127.5 - 1
    r = diffusion.restore(x, steps=steps, keep_steps=keep_steps, generator=generator)
    st = torch.stack([x, r.y0, r.y1, r.y2], dim=1)
    return ((st.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def add_diffusion_states(series: Series, diffusion, generator: torch.Generator, steps: int | None = None,
                         keep_steps: tuple[int, int] | None = None) -> Series:
    """Replace series.states (N, 1, 3, c, c) by (N, 4, 3, c, c) (`diffusion_states`)."""
    series.states = diffusion_states(torch.from_numpy(series.states[:, 0]), diffusion, generator, steps,
                                     keep_steps).numpy()
    return series


@dataclass
class _WorkerArgs:
    cfg: StreamConfig
    photos: list[Path]
    diffusion_cfg: object | None
    diffusion_state: dict | None
    steps: int | None
    keep_steps: tuple[int, int] | None
    seed: list[int] = field(default_factory=list)


def _worker(args: _WorkerArgs, out: mp.Queue) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    diffusion = None
    if args.diffusion_cfg is not None:
        from iqa.diffusion import Diffusion
        diffusion = Diffusion(args.diffusion_cfg).eval()
        diffusion.load_state_dict(args.diffusion_state)
    cache: dict[Path, np.ndarray] = {}
    while True:
        path = args.photos[int(rng.integers(len(args.photos)))]
        if path not in cache:
            cache[path] = load_image(path).array
        s = make_series(cache[path], args.cfg, rng, name=path.stem)
        if diffusion is not None:
            s = add_diffusion_states(s, diffusion, gen, args.steps, args.keep_steps)
        out.put(s)


class SeriesStream:
    """Worker processes making series into a bounded replay buffer; `batch(k)` draws k series.

    diffusion: a `Diffusion` module (its config and weights go to the workers) or None for x only;
    steps / keep_steps: its sampler settings (default: its config's).
    start: the step the run starts from (part of the workers' seeds). Use as a context manager, or
    call `close()`, so the workers end with the run."""

    def __init__(self, cfg: StreamConfig, diffusion=None, steps: int | None = None,
                 keep_steps: tuple[int, int] | None = None, start: int = 0):
        self.cfg = cfg
        self.photos = training_photos(cfg)
        if not self.photos:
            raise ValueError(f"{cfg.photos}: no photos in the {cfg.part!r} part")
        cfg.kind_names()
        self.rng = np.random.default_rng([cfg.seed, start, 1 << 20])
        self.buffer: list[Series] = []
        self.made = 0
        ctx = worker_context(__name__)
        self.queue = ctx.Queue(maxsize=QUEUE_SERIES * max(1, cfg.workers))
        dcfg = dstate = None
        if diffusion is not None:
            dcfg, dstate = diffusion.cfg, {k: v.detach().cpu() for k, v in diffusion.state_dict().items()}
        self.procs = []
        for w in range(cfg.workers):
            args = _WorkerArgs(cfg, self.photos, dcfg, dstate, steps, keep_steps, [cfg.seed, w, start])
            p = ctx.Process(target=_worker, args=(args, self.queue), daemon=True)
            p.start()
            self.procs.append(p)

    def _take(self, block: bool) -> bool:
        try:
            s = self.queue.get(block=block, timeout=600 if block else None)
        except queue.Empty:
            if block:
                self._check_workers()
                raise RuntimeError("no series from the stream's workers in 10 minutes") from None
            return False
        self.made += 1
        if len(self.buffer) < self.cfg.buffer:
            self.buffer.append(s)
        else:
            self.buffer[int(self.rng.integers(len(self.buffer)))] = s
        return True

    def _check_workers(self) -> None:
        dead = [p for p in self.procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"{len(dead)} stream worker(s) ended (exit code {dead[0].exitcode}); "
                               "see the messages above")

    def batch(self, k: int) -> Batch:
        """k series from the buffer (new series taken in first; waits only while it holds fewer than k)."""
        while self._take(block=False):
            pass
        while len(self.buffer) < k:
            self._check_workers()
            self._take(block=True)
        chosen = [self.buffer[i] for i in self.rng.choice(len(self.buffer), size=k, replace=False)]
        n = [len(s.kind) for s in chosen]
        return Batch(states=torch.from_numpy(np.concatenate([s.states for s in chosen])),
                     series=torch.repeat_interleave(torch.arange(k), torch.tensor(n)),
                     kind=torch.from_numpy(np.concatenate([s.kind for s in chosen])),
                     level=torch.from_numpy(np.concatenate([s.level for s in chosen])),
                     mos=torch.from_numpy(np.concatenate([s.mos for s in chosen])),
                     local=torch.from_numpy(np.concatenate([s.local for s in chosen])))

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=10)
        self.queue.close()

    def __enter__(self) -> "SeriesStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ordered_pairs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(better, worse) row indices: within each series, clean above every distortion and, within a
    kind, each level above every higher level."""
    s, k, lv = batch.series, batch.kind, batch.level
    same_series = s[:, None] == s[None, :]
    clean_first = (k[:, None] == CLEAN) & (k[None, :] != CLEAN)
    level_order = (k[:, None] == k[None, :]) & (k[:, None] != CLEAN) & (lv[:, None] < lv[None, :])
    better, worse = torch.nonzero(same_series & (clean_first | level_order), as_tuple=True)
    return better, worse
