"""On-disk caches of the two expensive, deterministic stages that IQA training repeats.

`DiffusionCache`: the diffusion restoration (x -> y0, y1, y2) of each image, computed once. An entry
is keyed by the image content (sha256 of the file bytes), a hash of the diffusion network's weights
and the sampler settings (steps, sampler, keep_steps, seed, `diffusion.on`, crop size, and the crop
count in "crops" mode), so any change recomputes. It holds the analysed image's four states as uint8
(compressed .npz) plus the restored windows: the K fixed `crop_boxes` in "crops" mode, the whole
image in "image" mode.

`FeatureCache`: with frozen backbones, the backbone part of `DiffV2IQA.features` on the K fixed
crops of each image (and their horizontal flips), float16, keyed by the states it was computed from
and the backbone weights. Maps are stored at min(native, grid) resolution (the grid resampling that
upsamples happens on load), which keeps the files several times smaller than `Features.vcg`.

Every file is written to a temporary name and renamed, so a killed run never leaves a half-written
entry; temporary files are never read, and an unreadable entry is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from iqa.assess import Assessor, crop_boxes, to_tensor
from iqa.model import N_STATES, DiffV2IQA, Features
from iqa.progress import progress_bar
from iqa.vcg import to_grid

log = logging.getLogger(__name__)

# Bump when the entry format or the restoration pipeline changes. 2: per-image noise seeds; 3: one
# starting-noise field per image.
CACHE_VERSION = 3
FEATURE_VERSION = 1
HASH_CHUNK = 1 << 20
FP16_MAX = float(np.finfo(np.float16).max)
TEMP_SUFFIX = ".tmp"
STATES_DIR, FEATURES_DIR = "diffusion", "features"  # sub-folders of a training run's --cache folder
DEFAULT_SEED = 0  # the seed `Assessor.assess` uses by default, so cached states match inference
FEATURE_BATCH = 16  # crops per backbone batch when filling the feature cache


# ---------------------------------------------------------------------------------------------
# Hashes and atomic files


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(*modules: torch.nn.Module | None) -> str:
    """sha256 over the state dicts (names, dtypes, shapes, values) of `modules`; None counts as empty."""
    h = hashlib.sha256()
    for m in modules:
        h.update(b"<module>" if m is not None else b"<none>")
        if m is None:
            continue
        for name, t in sorted(m.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _atomic_write(path: Path, write) -> None:
    """Call write(file object) on a temporary file next to `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Hashes:
    """Content hashes of image files, remembered per (path, size, mtime)."""

    def __init__(self):
        self._known: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: str | Path) -> str:
        st = os.stat(path)
        k = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        if k not in self._known:
            self._known[k] = file_sha256(path)
        return self._known[k]


# ---------------------------------------------------------------------------------------------
# Diffusion outputs


@dataclass(frozen=True)
class DiffusionKey:
    """Everything the cached states depend on. `crops` is 0 in "image" mode (boxes do not matter)."""

    image_sha256: str
    weights_sha256: str  # "none" when the model has no diffusion network
    steps: int
    sampler: str
    keep_steps: tuple[int, int]
    seed: int
    on: str
    crop: int
    crops: int
    version: int = CACHE_VERSION

    def digest(self) -> str:
        return _digest(asdict(self))


@dataclass
class CachedStates:
    """The four states of one analysed image and where they are valid.

    states: (4, H, W, 3) uint8 (x, y0, y1, y2); boxes: (M, 4) int (x0, y0, x1, y1) restored windows
    (the K fixed crops in "crops" mode, the whole image in "image" mode); steps / alpha_bars of y1, y2.
    """

    states: np.ndarray
    boxes: np.ndarray
    steps: tuple[int, int]
    alpha_bars: tuple[float, float]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the analysed image."""
        return int(self.states.shape[2]), int(self.states.shape[1])

    def crop(self, box: Sequence[int]) -> np.ndarray:
        """(4, 3, h, w) uint8 window (x0, y0, x1, y1) of all four states, channels first."""
        x0, y0, x1, y1 = (int(v) for v in box)
        return np.ascontiguousarray(self.states[:, y0:y1, x0:x1].transpose(0, 3, 1, 2))


class DiffusionCache:
    """y0, y1, y2 of each image computed once by `assessor.restore` and kept under `root`.

    Entries live at root/<digest[:2]>/<digest>.npz. Models without a diffusion network
    (`use_diffusion=False`) need no cache: `get` returns x as every state and writes nothing.
    `crops` is the number K of fixed crop windows (what `Assessor.assess(crops=K)` uses).
    """

    def __init__(self, root: str | Path, assessor: Assessor, crops: int, seed: int = DEFAULT_SEED):
        if crops < 1:
            raise ValueError(f"the number of crops must be at least 1, got {crops}")
        self.root = Path(root)
        self.assessor = assessor
        self.crops = int(crops)
        self.seed = int(seed)
        self._hash = _Hashes()
        diff = assessor.model.diffusion
        self._weights = weights_sha256(diff) if diff is not None else "none"

    @property
    def enabled(self) -> bool:
        return self.assessor.model.diffusion is not None

    @property
    def mode(self) -> str:
        """Where the states are valid: "crops" or "region" (the K fixed windows) or "image" (everywhere)."""
        return self.assessor.cfg.diffusion.on if self.enabled else "image"

    def key(self, image: str | Path) -> DiffusionKey:
        d = self.assessor.cfg.diffusion
        on = d.on if self.enabled else "none"
        return DiffusionKey(
            image_sha256=self._hash(image), weights_sha256=self._weights,
            steps=d.sample_steps if self.enabled else 0, sampler=d.sampler if self.enabled else "none",
            keep_steps=tuple(d.keep_steps) if self.enabled else (0, 0), seed=self.seed if self.enabled else 0,
            on=on, crop=self.assessor.cfg.crop, crops=self.crops if on in ("crops", "region", "none") else 0)

    def path(self, key: DiffusionKey) -> Path:
        digest = key.digest()
        return self.root / digest[:2] / f"{digest}.npz"

    def eval_boxes(self, entry: CachedStates) -> list[tuple[int, int, int, int]]:
        """The K fixed crop windows of an entry (the windows `Assessor.assess(crops=K)` scores)."""
        w, h = entry.size
        return crop_boxes(w, h, self.assessor.cfg.crop, self.crops, self.assessor.cell)

    def lookup(self, image: str | Path) -> CachedStates | None:
        """The stored entry of `image`, or None (missing, or unreadable: then it is recomputed)."""
        if not self.enabled:
            return None
        key = self.key(image)
        return read_entry(self.path(key), key)

    def get(self, image: str | Path) -> CachedStates:
        """The entry of `image`: read from disk, or computed and stored. Raises ImageError on a bad file."""
        if not self.enabled:
            return self.compute(image)
        key = self.key(image)
        path = self.path(key)
        entry = read_entry(path, key)
        if entry is None:
            entry = self.compute(image)
            write_entry(path, key, entry)
        return entry

    @torch.no_grad()
    def compute(self, image: str | Path) -> CachedStates:
        """Restore `image` now (no cache involved)."""
        img, _notices, _name = self.assessor.prepare(image)
        h, w = img.shape[:2]
        if not self.enabled:
            return CachedStates(states=np.broadcast_to(img, (N_STATES, *img.shape)),
                                boxes=np.array([[0, 0, w, h]]), steps=(0, 0), alpha_bars=(1.0, 1.0))
        boxes = crop_boxes(w, h, self.assessor.cfg.crop, self.crops, self.assessor.cell)
        x = to_tensor(np.array(img)).to(self.assessor.device)  # a writable copy for torch
        full, (steps, alpha_bars) = self.assessor.restore(x, boxes, None, self.seed)
        states = np.stack([_to_hwc_uint8(s[0]) for s in full])
        valid = [(0, 0, w, h)] if self.mode == "image" else boxes
        return CachedStates(states=states, boxes=np.array(valid, dtype=np.int64),
                            steps=(int(steps[0]), int(steps[1])),
                            alpha_bars=(float(alpha_bars[0]), float(alpha_bars[1])))

    def fill(self, images: Iterable[str | Path], rank: int = 0, world: int = 1, progress: bool = True) -> int:
        """Compute the missing entries of `images` (this process takes every world-th one, starting at
        `rank`). Returns the number computed here."""
        if not self.enabled:
            return 0
        mine = list(images)[rank::world]
        todo = [p for p in mine if not entry_ok(self.path(self.key(p)), self.key(p))]
        for p in progress_bar(todo, desc="diffusion cache", unit="img", disable=not progress or not todo):
            self.get(p)
        return len(todo)


def _to_hwc_uint8(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8 (same rounding as `iqa.assess.to_uint8`)."""
    return ((t.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def write_entry(path: Path, key: DiffusionKey, entry: CachedStates) -> None:
    """Store an entry atomically (compressed .npz; the key is kept inside to be checked on read)."""
    def write(f):
        np.savez_compressed(f, states=np.ascontiguousarray(entry.states), boxes=entry.boxes,
                            steps=np.array(entry.steps), alpha_bars=np.array(entry.alpha_bars),
                            key=np.array(_key_text(key)))
    _atomic_write(path, write)


def _key_text(key: DiffusionKey) -> str:
    return json.dumps(asdict(key), sort_keys=True)


def entry_ok(path: str | Path, key: DiffusionKey) -> bool:
    """Cheap check that an entry exists, is a complete archive and was made under `key` (the
    arrays themselves are not decompressed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["key"])) == json.loads(_key_text(key))
    except Exception:
        return False


def read_entry(path: str | Path, key: DiffusionKey | None = None) -> CachedStates | None:
    """An entry from disk; None if it is missing, unreadable or stored under another key."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if key is not None and json.loads(str(z["key"])) != json.loads(_key_text(key)):
                log.warning("%s: cache entry made for other settings; recomputing", path)
                return None
            return CachedStates(states=z["states"], boxes=z["boxes"],
                                steps=tuple(int(v) for v in z["steps"]),
                                alpha_bars=tuple(float(v) for v in z["alpha_bars"]))
    except Exception as err:  # truncated or foreign file: treat as a miss
        log.warning("%s: unreadable cache entry (%s); recomputing", path, err)
        return None


# ---------------------------------------------------------------------------------------------
# Backbone features (frozen backbones)


@dataclass(frozen=True)
class FeatureLayout:
    """How one stored feature row splits into `Features`.

    maps: (C, h, w) of each VCG map in selection order (state-major, as `VCG.select`), stored at
    min(native, grid) resolution; vda: (4, D) global vectors or None; grid: the token grid side.
    """

    maps: tuple[tuple[int, int, int], ...]
    vda: tuple[int, int] | None
    grid: int

    @property
    def size(self) -> int:
        n = sum(c * h * w for c, h, w in self.maps)
        return n + (self.vda[0] * self.vda[1] if self.vda else 0)

    def decode(self, rows: torch.Tensor) -> Features:
        """rows (B, size) -> `Features` (vcg (B, C_sel, g, g) or None, vda (B, 4, D) or None), float32."""
        rows = rows.float()
        b = rows.shape[0]
        sizes = [c * h * w for c, h, w in self.maps] + ([self.vda[0] * self.vda[1]] if self.vda else [])
        parts = rows.split(sizes, dim=1)
        vcg = None
        if self.maps:
            vcg = torch.cat([to_grid(p.view(b, *shape), self.grid) for p, shape in zip(parts, self.maps)], dim=1)
        vda = parts[-1].view(b, *self.vda) if self.vda else None
        return Features(vcg=vcg, vda=vda)


def compact_features(model: DiffV2IQA, states: torch.Tensor) -> torch.Tensor:
    """The backbone part of `model.features(states)`, flattened: states (B, 4, 3, h, w) in [-1, 1]
    -> (B, layout.size). Maps larger than the grid are pooled to it; smaller ones are kept native."""
    maps, vda = _backbone_outputs(model, states)
    b = states.shape[0]
    parts = [m.flatten(1) for m in maps] + ([vda.flatten(1)] if vda is not None else [])
    return torch.cat(parts, dim=1) if parts else states.new_zeros(b, 0)


def feature_layout(model: DiffV2IQA) -> FeatureLayout:
    """The layout of `compact_features` for `model` (one dummy crop through the backbones)."""
    c = model.cfg.crop
    dummy = torch.zeros(1, N_STATES, 3, c, c, device=model.mean.device)
    with torch.no_grad():
        maps, vda = _backbone_outputs(model, dummy)
    grid = model.cfg.vcg.grid
    return FeatureLayout(maps=tuple(tuple(int(s) for s in m.shape[1:]) for m in maps),
                         vda=None if vda is None else (int(vda.shape[1]), int(vda.shape[2])), grid=grid)


def _backbone_outputs(model: DiffV2IQA, states: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Mirror of `DiffV2IQA.features` up to (not including) the grid upsampling."""
    b = states.shape[0]
    x, n = model.backbone_input(states)
    head = model.cfg.vda.feature if (model.vda is not None and model.vda_backbone is None) else None
    maps_out: list[torch.Tensor] = []
    vda = None
    grid = model.cfg.vcg.grid
    if model.backbone is not None:
        maps, g = model.backbone(x, maps=model.vcg is not None, head=head)
        if model.vcg is not None:
            for s, sel in enumerate(model.vcg.selection):
                for i in sel:
                    m = maps[i].view(b, n, *maps[i].shape[1:])[:, min(s, n - 1)]
                    maps_out.append(to_grid(m, grid) if m.shape[-1] > grid else m)
        if g is not None:
            vda = g.view(b, n, -1).expand(b, N_STATES, -1)
    if model.vda_backbone is not None:
        _, g = model.vda_backbone(x, maps=False, head=model.cfg.vda.feature)
        vda = g.view(b, n, -1).expand(b, N_STATES, -1)
    return maps_out, vda


class FeatureCache:
    """Frozen-backbone features of the K fixed crops of each image (then their flips), float16.

    One file per image: root/<digest[:2]>/<digest>.npy of shape (V, layout.size), rows =
    [crop 0..n-1] then, with `flips`, [flipped crop 0..n-1] (n <= K: small images have fewer windows).
    """

    def __init__(self, root: str | Path, model: DiffV2IQA, states: DiffusionCache, flips: bool = True):
        trainable = [n for b in (model.backbone, model.vda_backbone) if b is not None
                     for n, p in b.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError("the feature cache needs frozen backbones (their features must not change); "
                             f"{len(trainable)} backbone parameters are trainable")
        self.root = Path(root)
        self.model = model
        self.states = states
        self.flips = bool(flips)
        self.layout = feature_layout(model)
        cfg = model.cfg
        self._settings = {
            "version": FEATURE_VERSION, "flips": self.flips, "crops": states.crops,
            "backbones": weights_sha256(model.backbone, model.vda_backbone),
            "vcg": [cfg.vcg.backbone.name, list(cfg.vcg.backbone.indices), [list(s) for s in model.vcg.selection]
                    if model.vcg is not None else None, cfg.vcg.grid],
            "vda": [cfg.vda.backbone.name, cfg.vda.feature, cfg.vda.share_vcg_backbone, model.vda is not None],
            "norm": [list(cfg.mean), list(cfg.std)], "layout": asdict(self.layout),
        }

    @property
    def variants_per_crop(self) -> int:
        return 2 if self.flips else 1

    def path(self, image: str | Path) -> Path:
        digest = _digest({"states": self.states.key(image).digest(), **self._settings})
        return self.root / digest[:2] / f"{digest}.npy"

    def get(self, image: str | Path) -> np.ndarray:
        """(V, layout.size) float16 rows of `image` (memory-mapped), computed and stored on a miss."""
        path = self.path(image)
        rows = self._read(path)
        if rows is None:
            rows = self.compute(image)
            _atomic_write(path, lambda f: np.save(f, rows))
        return rows

    def _read(self, path: Path) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:
            log.warning("%s: unreadable feature cache file (%s); recomputing", path, err)
            return None
        if rows.ndim != 2 or rows.shape[1] != self.layout.size or rows.shape[0] % self.variants_per_crop:
            log.warning("%s: feature cache file of shape %s does not fit; recomputing", path, rows.shape)
            return None
        return rows

    @torch.no_grad()
    def compute(self, image: str | Path) -> np.ndarray:
        entry = self.states.get(image)
        crops = torch.from_numpy(np.stack([entry.crop(b) for b in self.states.eval_boxes(entry)]))
        if self.flips:
            crops = torch.cat([crops, crops.flip(-1)])
        out = []
        device = self.model.mean.device
        for chunk in crops.split(FEATURE_BATCH):
            s = chunk.to(device).float() / 127.5 - 1
            out.append(compact_features(self.model, s).float().clamp(-FP16_MAX, FP16_MAX).cpu())
        return torch.cat(out).half().numpy()

    def fill(self, images: Iterable[str | Path], rank: int = 0, world: int = 1, progress: bool = True) -> int:
        """Compute the missing files of `images` (every world-th one from `rank`); returns the count."""
        mine = list(images)[rank::world]
        todo = [p for p in mine if self._read(self.path(p)) is None]
        was_training = self.model.training
        self.model.eval()
        try:
            for p in progress_bar(todo, desc="feature cache", unit="img", disable=not progress or not todo):
                self.get(p)
        finally:
            self.model.train(was_training)
        return len(todo)
