"""Scoring images: `load()` gives an `Assessor`; `Assessor.assess(image)` gives an `Assessment`.

One call runs the whole pipeline on K crops: diffusion restoration (on the whole image or on the
crops, per config), backbones on (x, y0, y1, y2), both branches, and stitches the per-patch maps of
every crop back onto the image's token grid.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iqa.checkpoint import load_checkpoint
from iqa.config import PRESETS, DiffusionConfig, ModelConfig, preset
from iqa.diffusion import check_full_res_steps, check_unet_scale
from iqa.images import ImageError, describe, load_image
from iqa.model import DiffV2IQA
from iqa.results import Assessment, NoisyState, PatchMaps, RestorationChange

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default"
TILE = 0  # as a crop count: tile the whole image (every cell covered at least once)
# Tiles by default: with 3 crops, damage on a ninth of a held-out photo left its score no lower in 30 % (test photos)
# and 17 % (validation photos) of the cases, with tiles in 1 % and 0 % (`python -m iqa partial`; docs/LEVELS.md,
# "Whole-image tiles by default").
DEFAULT_CROPS = TILE
RESTORE_ON = ("image", "crops", "region")  # values of DiffusionConfig.on
RECENT = 8  # assessments kept in memory, so the same image with the same settings answers at once

Progress = Callable[[float, str], None]  # (fraction done, description)
OOM_MESSAGES = ("out of memory", "can't allocate memory")  # CUDA's and the CPU allocator's RuntimeError texts


STAGES = ("diffusion", "backbones", "vcg")  # stages that may run under bf16 autocast
# Run in bf16 on CPUs with AMX tiles (Intel Sapphire Rapids and later), whose bf16 matrix units make these
# stages faster: on a 512x384 photo the backbones take about half their float32 time (0.10 vs 0.18 s,
# `python scripts/bf16_ab.py`), the diffusion ~15 % less (2-core Xeon, 2026-12-05). On the 9 test photos
# at 512 px with 6 plain kinds (`python scripts/precision_probe.py --photos ../shared/pristine`) the three
# together move the score by 0.007 on average against float32 (the heads always run in float32), another
# noise seed by 0.006; the levels test is not worse (docs/LEVELS.md). Without AMX (AVX-512 BF16 alone, as
# on AMD EPYC) bf16 ran over ten times slower than float32: float32 there.
BF16_STAGES = ("diffusion", "backbones", "vcg")


def default_bf16(device: torch.device) -> tuple[str, ...]:
    """`BF16_STAGES` on a CPU with AMX tiles, else none (float32 everywhere)."""
    if device.type != "cpu":
        return ()
    try:
        amx = bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        amx = False
    return BF16_STAGES if amx else ()


def out_of_memory(err: BaseException) -> bool:
    """True for an allocation failure on any device (PyTorch's CPU allocator raises a plain RuntimeError)."""
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError)
                                             and any(m in str(err) for m in OOM_MESSAGES))


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


def crop_boxes(w: int, h: int, crop: int, k: int, align: int) -> list[tuple[int, int, int, int]]:
    """Up to K crop windows (x0, y0, x1, y1) spread evenly over a (w, h) image, origins on the `align`
    grid (so per-patch maps of overlapping crops line up). Small images give fewer, distinct windows.
    K = TILE (0): ceil(w / crop) x ceil(h / crop) overlapping windows that cover every pixel, the last of
    each row and column flush with the image's edge and so possibly off the grid (`tile_starts`)."""
    if k < 0:
        raise ValueError(f"the number of crops must be at least 1, or {TILE} to tile the image")
    if k == TILE:
        return [(x, y, x + crop, y + crop) for y in tile_starts(h, crop, align) for x in tile_starts(w, crop, align)]
    cols = max(1, min(k, math.ceil(math.sqrt(k * w / h))))
    rows = math.ceil(k / cols)

    def starts(n: int, size: int) -> list[int]:
        hi = (size - crop) // align * align  # last aligned origin that fits
        if n == 1:
            return [hi // 2 // align * align]
        return sorted({int(v) // align * align for v in np.linspace(0, hi, n)})  # small images: fewer

    xs, ys = starts(cols, w), starts(rows, h)
    grid = [(x, y) for y in ys for x in xs]
    if len(grid) > k:  # take k of the rows x cols positions, spread over the grid
        grid = [grid[i] for i in np.linspace(0, len(grid) - 1, k).round().astype(int)]
    return [(x, y, x + crop, y + crop) for x, y in grid]


def tile_starts(size: int, crop: int, align: int) -> list[int]:
    """Origins of ceil(size / crop) evenly spread windows of side `crop` that cover [0, size) with no gap
    (one more where snapping to the grid would open one): all on the `align` grid but the last, which ends
    flush with the image's edge (off the grid when size - crop is not a multiple of `align`;
    `Assessor._stitch` weighs its cells by their overlap)."""
    last = size - crop
    n = math.ceil(size / crop)
    while True:
        for snap in (math.floor, math.ceil):  # the middle origins rounded down to the grid, else up
            starts = sorted({min(last, snap(v / align) * align) for v in np.linspace(0, last, n)[:-1]} | {last})
            if all(b - a <= crop for a, b in zip(starts, starts[1:])):
                return starts
        n += 1  # either rounding opens a gap: one window more


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def noise_seed(x: torch.Tensor, seed: int) -> int:
    """The diffusion's noise seed for image x: drawn from its content and the user's seed, so that
    one image always gets the same noise and two images never share it."""
    h = hashlib.sha256(f"{seed}:{tuple(x.shape)}:".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


class Assessor:
    """A loaded model plus the inference pipeline around it.

    `channels_last` stores the convolution weights in NHWC (not the U-Net's, see
    `DiffV2IQA.to_channels_last`), which the CPU's oneDNN kernels run faster; it changes no score
    beyond float rounding. `fold_batchnorm` folds the backbones' BatchNorms into their convolutions
    (`DiffV2IQA.fold_batchnorm`: about a third less backbone time on the CPU); None folds them where
    the backbones run in float32, where it is exact, and not under bf16, where the rounding changes and
    the levels test came out a little lower (docs/LEVELS.md). Leave both off for a model that is still
    being trained and saved (safetensors needs contiguous tensors; a folded model cannot be saved)."""

    def __init__(self, model: DiffV2IQA, card: dict | None = None, device: str = "auto",
                 channels_last: bool = False, bf16: Iterable[str] | None = None,
                 fold_batchnorm: bool | None = False):
        self.device = resolve_device(device)
        self.bf16 = default_bf16(self.device) if bf16 is None else tuple(bf16)
        unknown = set(self.bf16) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) for bf16: {sorted(unknown)}; choose from {STAGES}")
        self.model = model.to(self.device).eval()
        if fold_batchnorm or (fold_batchnorm is None and "backbones" not in self.bf16):
            self.model.fold_batchnorm()
        if channels_last:
            self.model.to_channels_last()
        self.cfg: ModelConfig = model.cfg
        self.card = card or {}
        self._recent: OrderedDict[tuple, Assessment] = OrderedDict()

    @functools.cached_property
    def vcg_weights_fixed(self) -> bool:
        """Whether the VCG weight head gives every crop one and the same map, which says nothing about an image
        (PatchMaps.weight_fixed). Probed on the first assessment, not at construction: it runs the backbones."""
        return self.model.fixed_vcg_weights() is not None

    def autocast(self, stage: str):
        """bf16 autocast for `stage` when it is one of `self.bf16`, else a no-op context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=stage in self.bf16)

    @property
    def cell(self) -> int:
        """Pixel side of one token-grid cell on a crop."""
        return self.cfg.crop // self.cfg.vcg.grid

    def assess(self, image, *, crops: int | None = None, steps: int | None = None, seed: int = 0,
               progress: Progress | None = None, name: str | None = None) -> Assessment:
        """Assess one image (path, bytes, PIL image or (H, W, 3) array). Raises `ImageError` on bad input,
        and for an image too big for the device's memory (so a batch reports it and goes on)."""
        try:
            return self._assess(image, crops=crops, steps=steps, seed=seed, progress=progress, name=name)
        except (RuntimeError, MemoryError) as err:
            if not out_of_memory(err):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise ImageError(f"{name or describe(image)}: out of memory on {self.device}; use fewer crops, "
                             "a smaller image or another device.") from None

    @torch.inference_mode()
    def _assess(self, image, *, crops: int | None, steps: int | None, seed: int, progress: Progress | None,
                name: str | None) -> Assessment:
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        report = progress or (lambda f, d: None)
        t = time.perf_counter()
        img, notices, source = self.prepare(image, name)
        h, w = img.shape[:2]
        k = DEFAULT_CROPS if crops is None else crops
        # the pipeline settings are part of the key: a caller may switch them on a live assessor
        key = (hashlib.sha256(img.tobytes()).hexdigest(), img.shape, k, steps, seed, self.cfg.diffusion.on,
               self.cfg.diffusion.unet_scale, self.cfg.diffusion.full_res_steps, self.bf16)
        if key in self._recent:
            self._recent.move_to_end(key)
            report(1.0, "done (assessed before with these settings)")
            t = time.perf_counter() - t_all
            return replace(self._recent[key], timings={"load": t, "total": t}, cached=True, source=source)
        boxes = crop_boxes(w, h, self.cfg.crop, k, self.cell)
        x = to_tensor(img).to(self.device)
        timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        states_full, kept = self.restore(x, boxes, steps, seed, report)
        timings["diffusion"] = time.perf_counter() - t
        if self.model.diffusion is not None:
            timings["diffusion_per_step"] = timings["diffusion"] / (steps or self.cfg.diffusion.sample_steps)
        t = time.perf_counter()
        crop_states = torch.stack([torch.stack([s[0, :, y0:y1, x0:x1] for s in states_full])
                                   for x0, y0, x1, y1 in boxes])  # (K, 4, 3, c, c)
        timings["crops"] = time.perf_counter() - t

        report(0.9, "quality branches")
        t = time.perf_counter()
        with self.autocast("backbones"):
            feats = self.model.features(crop_states)
        timings["backbones"] = time.perf_counter() - t
        s1 = s2 = None
        vcg_maps = vda_maps = None
        score = torch.zeros(len(boxes), device=self.device)
        if self.model.vcg is not None:
            t = time.perf_counter()
            with self.autocast("vcg"):
                s1, f1, w1 = (v.float() for v in self.model.vcg(feats.vcg.float()))
            timings["vcg"] = time.perf_counter() - t
            score = score + self.cfg.vcg_weight * s1
        if self.model.vda is not None:
            t = time.perf_counter()
            s2, f2, w2 = self.model.vda(feats.vda.float())  # float32 even when the backbones ran in bf16
            timings["vda"] = time.perf_counter() - t
            score = score + self.cfg.vda_weight * s2
        t = time.perf_counter()
        if s1 is not None:
            vcg_maps = replace(self._stitch(f1, w1, boxes, w, h), weight_fixed=self.vcg_weights_fixed)
        if s2 is not None:
            vda_maps = replace(self._stitch(f2, w2, boxes, w, h), spatial=False)
        timings["maps"] = time.perf_counter() - t
        report(1.0, "done")
        names = ("y1", "y2")
        t = time.perf_counter()
        restored = to_uint8(states_full[1][0])
        result = Assessment(
            score=float(score.mean()), s1=None if s1 is None else float(s1.mean()),
            s2=None if s2 is None else float(s2.mean()), vcg=vcg_maps, vda=vda_maps, image=img,
            restored=restored,
            states=[NoisyState(n, to_uint8(states_full[2 + i][0]), kept[0][i], kept[1][i])
                    for i, n in enumerate(names)],
            crops=boxes, crop_scores=[float(v) for v in score], timings=timings, notices=notices,
            source=source, crop_s1=[] if s1 is None else [float(v) for v in s1],
            crop_s2=[] if s2 is None else [float(v) for v in s2],
            restoration=None if self.model.diffusion is None else restoration_change(img, restored, boxes))
        timings["outputs"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_all
        self._recent[key] = result
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        return result

    def assess_batch(self, images: Iterable, **kwargs) -> list[Assessment | ImageError]:
        """Assess many images; a bad one yields its `ImageError` in place and the rest continue."""
        out: list[Assessment | ImageError] = []
        for image in images:
            try:
                out.append(self.assess(image, **kwargs))
            except ImageError as e:
                out.append(e)
        return out

    def prepare(self, image, name: str | None = None) -> tuple[np.ndarray, list[str], str]:
        """(analysed image (H, W, 3) uint8, notices, source name): loaded, oriented, size-bounded,
        and upscaled when its short side is below the crop size (the backbones need full crops)."""
        loaded = load_image(image, name=name)
        notices = list(loaded.notices)
        return self._fit_crop(loaded.array, notices), notices, loaded.name

    def _fit_crop(self, img: np.ndarray, notices: list[str]) -> np.ndarray:
        h, w = img.shape[:2]
        c = self.cfg.crop
        if min(h, w) >= c:
            return img
        s = c / min(h, w)
        nw, nh = max(c, round(w * s)), max(c, round(h * s))
        t = F.interpolate(to_tensor(img), size=(nh, nw), mode="bicubic", align_corners=False)
        notices.append(f"upscaled from {w}x{h} to {nw}x{nh} px (the model analyses {c}x{c} crops)")
        return to_uint8(t[0])

    @torch.inference_mode()
    def restore(self, x: torch.Tensor, boxes, steps: int | None = None, seed: int = 0,
                report: Progress | None = None):
        """x (1, 3, H, W) in [-1, 1] -> ([x, y0, y1, y2] as (1, 3, H, W) tensors, ((t1, t2), (alpha1, alpha2))).

        With `diffusion.on` "crops" or "region" only the pixels inside `restore_windows(boxes)` are
        restored (the rest is x). The starting noise is one field over the image, drawn from
        `noise_seed(x, seed)`: every window takes its own part of it, so a pixel starts from the same
        noise whichever windows hold it.
        """
        report = report or (lambda f, d: None)
        diff = self.model.diffusion
        if diff is None:  # ablation without diffusion: every state is the input
            return [x] * 4, ((0, 0), (1.0, 1.0))
        gen = torch.Generator(device=self.device).manual_seed(noise_seed(x, seed))
        noise = torch.randn(x.shape, generator=gen, device=self.device, dtype=x.dtype)
        n = steps or self.cfg.diffusion.sample_steps
        keep = self.cfg.diffusion.keep_steps if steps is None else scaled_keep_steps(self.cfg, n)

        def prog(i: int, total: int) -> None:
            report(0.85 * i / total, f"diffusion step {i}/{total}")

        def run(cond: torch.Tensor, start: torch.Tensor):
            with self.autocast("diffusion"):
                return diff.restore(cond, steps=n, keep_steps=keep, generator=gen, progress=prog, noise=start)

        if self.cfg.diffusion.on == "image":
            r = run(x, noise)
            return [x, r.y0.float(), r.y1.float(), r.y2.float()], (r.steps, r.alpha_bars)
        windows = restore_windows(boxes, self.cfg.diffusion.on)
        r = run(torch.cat([x[:, :, y0:y1, x0:x1] for x0, y0, x1, y1 in windows]),
                torch.cat([noise[:, :, y0:y1, x0:x1] for x0, y0, x1, y1 in windows]))
        # Paste the restored windows onto the input (overlaps averaged; pixels outside stay the input).
        full = []
        for states in (r.y0, r.y1, r.y2):
            acc, cnt = torch.zeros_like(x), torch.zeros_like(x[:, :1])
            for (x0, y0, x1, y1), s in zip(windows, states):
                acc[0, :, y0:y1, x0:x1] += s
                cnt[0, :, y0:y1, x0:x1] += 1
            full.append(torch.where(cnt > 0, acc / cnt.clamp(min=1), x))
        return [x, *full], (r.steps, r.alpha_bars)

    def _stitch(self, f: torch.Tensor, wt: torch.Tensor, boxes, w: int, h: int) -> PatchMaps:
        """Per-crop (K, g, g) maps -> whole-image maps on the cell grid: each cell the average of the crop
        cells over it, weighted by the pixels they share (a plain average where crops sit on the grid)."""
        cell, g = self.cell, self.cfg.vcg.grid
        gh, gw = math.ceil(h / cell), math.ceil(w / cell)
        acc_f, acc_w, cnt = np.zeros((gh, gw)), np.zeros((gh, gw)), np.zeros((gh, gw))
        for (x0, y0, _, _), fk, wk in zip(boxes, f.cpu().numpy(), wt.cpu().numpy()):
            ay, ax = cell_overlap(gh, h, cell, y0, g), cell_overlap(gw, w, cell, x0, g)  # (gh, g), (gw, g)
            acc_f += ay @ fk @ ax.T
            acc_w += ay @ wk @ ax.T
            cnt += np.outer(ay.sum(1), ax.sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            score, weight = acc_f / cnt, acc_w / cnt
        ys, xs = np.meshgrid(np.arange(gh) * cell, np.arange(gw) * cell, indexing="ij")
        boxes_px = np.stack([xs, ys, np.minimum(xs + cell, w), np.minimum(ys + cell, h)], -1)
        return PatchMaps(score=score, weight=weight, boxes=boxes_px.astype(np.int32))


def cell_overlap(n: int, size: int, cell: int, start: int, g: int) -> np.ndarray:
    """(n, g) pixels shared, along one axis, by the image's n cells (the last one cut at `size`) and the g
    cells of a crop that starts at pixel `start`."""
    edges = np.minimum(np.arange(n + 1) * cell, size)
    crop_edges = start + np.arange(g + 1) * cell
    lo = np.maximum(edges[:-1, None], crop_edges[None, :-1])
    hi = np.minimum(edges[1:, None], crop_edges[None, 1:])
    return np.clip(hi - lo, 0, None).astype(float)


def check_restore_on(on: str) -> str:
    """`on` if it is a value of `DiffusionConfig.on` (see `RESTORE_ON`), else a ValueError."""
    if on not in RESTORE_ON:
        raise ValueError(f"unknown diffusion.on {on!r}; choose one of {RESTORE_ON}")
    return on


def override_diffusion(cfg: DiffusionConfig, on: str | None = None, unet_scale: int | None = None,
                       full_res_steps: int | None = None) -> None:
    """Set where and at which resolution the diffusion runs (`DiffusionConfig.on` / `.unet_scale` /
    `.full_res_steps`) where a value is given, after checking it (ValueError)."""
    if on is not None:
        cfg.on = check_restore_on(on)
    if unet_scale is not None:
        cfg.unet_scale = check_unet_scale(unet_scale)
    if full_res_steps is not None:
        cfg.full_res_steps = check_full_res_steps(full_res_steps)


def restore_windows(boxes, on: str) -> list[tuple[int, int, int, int]]:
    """The windows the diffusion restores for crop `boxes` (x0, y0, x1, y1): the boxes ("crops"), or
    ("region") their bounding rectangle when it holds fewer pixels than the boxes together."""
    check_restore_on(on)
    boxes = [tuple(int(v) for v in b) for b in boxes]
    if on == "region" and len(boxes) > 1:
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        if (x1 - x0) * (y1 - y0) < sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes):
            return [(x0, y0, x1, y1)]
    return boxes


def restoration_change(image: np.ndarray, restored: np.ndarray, boxes, threshold: int = 2) -> RestorationChange:
    """How much `restored` differs from `image` ((H, W, 3) uint8) inside the crop boxes."""
    mask = np.zeros(image.shape[:2], dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    diff = np.abs(image.astype(np.int16) - restored.astype(np.int16))[mask]  # (n, 3)
    return RestorationChange(mean_abs=float(diff.mean()), changed_share=float((diff.max(-1) > threshold).mean()),
                             threshold=threshold)


def scaled_keep_steps(cfg: ModelConfig, steps: int) -> tuple[int, int]:
    """Keep steps for another step count, at the same fraction of the schedule as the config's."""
    n0 = cfg.diffusion.sample_steps
    t1, t2 = (max(1, round(t * steps / n0)) for t in cfg.diffusion.keep_steps)
    t2 = min(steps, max(t2, t1 + 1))
    t1 = min(t1, t2 - 1)
    if t1 < 1:
        raise ValueError(f"{steps} sampling steps are too few to keep two intermediates; use at least 2")
    return t1, t2


def load(checkpoint_or_preset: str | Path | None = None, device: str = "auto",
         allow_random_backbone: bool = False, bf16: Iterable[str] | None = None,
         diffusion_on: str | None = None, diffusion_scale: int | None = None,
         full_res_steps: int | None = None, fold_batchnorm: bool | None = None) -> Assessor:
    """An `Assessor` from a checkpoint folder/file, a preset name (untrained heads), or the default.
    A preset whose backbone weights are not reachable raises `RandomBackboneError` unless
    `allow_random_backbone`. `bf16`: stages run under bf16 autocast (None: `default_bf16`).
    `diffusion_on`: where the diffusion runs (`DiffusionConfig.on`) instead of the checkpoint's setting;
    `diffusion_scale` / `full_res_steps`: the U-Net's `DiffusionConfig.unet_scale` / `.full_res_steps`
    instead of the checkpoint's. `fold_batchnorm`: see `Assessor` (None: where the backbones run in float32)."""
    assessor = _load(checkpoint_or_preset, device, allow_random_backbone, bf16, fold_batchnorm)
    override_diffusion(assessor.cfg.diffusion, diffusion_on, diffusion_scale, full_res_steps)
    return assessor


def _load(checkpoint_or_preset, device: str, allow_random_backbone: bool, bf16, fold: bool | None) -> Assessor:
    src = checkpoint_or_preset
    if src is None:
        src = DEFAULT_CHECKPOINT
        if not (src / "model.safetensors").is_file():
            raise FileNotFoundError(f"the bundled default checkpoint is missing ({src}); name a checkpoint "
                                    f"or a preset ({', '.join(PRESETS)})")
    if isinstance(src, str) and src.partition(":")[0] in PRESETS and not Path(src).exists():
        log.warning("preset %r: quality heads are untrained, scores are not meaningful", src)
        return Assessor(DiffV2IQA(preset(src, allow_random_backbone)).eval(), {"preset": src, "trained": False}, device,
                        channels_last=True, bf16=bf16, fold_batchnorm=fold)
    model, card = load_checkpoint(src, device="cpu")
    return Assessor(model, card, device, channels_last=True, bf16=bf16, fold_batchnorm=fold)
