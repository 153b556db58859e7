"""Reading user images safely: every odd input gets a defined behaviour, never a stack trace.

`load_image` returns an RGB uint8 array plus notices of what was converted. Unusable input raises
`ImageError`, whose message names the file, the problem and what to do.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 16  # smaller images carry too little to judge
MAX_ASPECT = 16  # long side / short side; thinner strips would be upscaled to absurd sizes for the crops
MAX_SIDE = 2048  # larger images are downscaled (long side) before analysis
MAX_PIXELS = 150_000_000  # refuse to decode anything bigger (decompression bombs); 12000^2 passes
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb check, aligned with ours
MAX_FILE_BYTES = 200 * 1024 * 1024
EXIF_ORIENTATION = 0x0112
ROTATING_ORIENTATIONS = range(2, 9)  # the EXIF values that flip or rotate; others are ignored by exif_transpose


class ImageError(ValueError):
    """An input that cannot be assessed; the message says which file, what is wrong, what to do."""


@dataclass
class LoadedImage:
    array: np.ndarray  # (H, W, 3) uint8 RGB
    name: str
    notices: list[str] = field(default_factory=list)


def describe(src) -> str:
    """A name for an image source in messages: its path, or what kind of object it is."""
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, bytes):
        return "uploaded bytes"
    if isinstance(src, Image.Image):
        return getattr(src, "filename", "") or "PIL image"
    return "array"


def _to_rgb(img: Image.Image, notices: list[str]) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img).astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        notices.append(f"{mode} (high bit depth) image scaled to 8 bits")
        return Image.fromarray(np.clip(a / hi * 255 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(a)
        if not finite.any():
            raise ImageError("floating-point image has no finite pixel values (all NaN or infinite).")
        notices.append("floating-point image scaled to 8 bits")
        if not finite.all():
            notices.append(f"{int((~finite).sum())} NaN or infinite pixel(s) set to black")
        lo, hi = a[finite].min(), a[finite].max()
        a = np.where(finite, (a - lo) / ((hi - lo) or 1), 0.0)
        return Image.fromarray((a * 255 + 0.5).astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notices.append("transparency flattened onto white")
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode != "RGB":
        notices.append(f"{mode} image converted to RGB")
        return img.convert("RGB")
    return img


def _array_to_pil(a: np.ndarray, name: str) -> Image.Image:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: array of shape {a.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        elif a.dtype == np.uint16:
            a = a / 257.0
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[a.shape[2]]
    return Image.fromarray(a[..., 0] if mode == "L" else a, mode)


def load_image(src, name: str | None = None, max_side: int = MAX_SIDE) -> LoadedImage:
    """Path, bytes, PIL image or array -> `LoadedImage` (RGB uint8, EXIF-oriented, bounded size)."""
    name = name or describe(src)
    notices: list[str] = []
    orig_size = None
    if isinstance(src, np.ndarray):
        img = _array_to_pil(src, name)
    elif isinstance(src, Image.Image):
        img = src
    else:
        if isinstance(src, (str, Path)):
            path = Path(src)
            if not path.is_file():
                raise ImageError(f"{name}: file not found. Check the path.")
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ImageError(f"{name}: file is {size / 2**20:.0f} MB; the limit is "
                                 f"{MAX_FILE_BYTES // 2**20} MB. Downscale or recompress it.")
            data = path.read_bytes()
        else:
            data = bytes(src)
        if not data:
            raise ImageError(f"{name}: file is empty (0 bytes). Upload the image again.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{name}: {w}x{h} pixels is too large to decode safely (limit "
                                     f"{MAX_PIXELS // 10**6} Mpx). Downscale it first.")
                orig_size = img.size
                img.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size when possible
                img.load()
        except ImageError:
            raise
        except (UnidentifiedImageError, Image.DecompressionBombError):
            raise ImageError(f"{name}: not a readable image (or too large). "
                             "Use PNG, JPEG, BMP, TIFF or WebP.") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{name}: image data is damaged or truncated ({e}). Re-export the file.") from None
    if getattr(img, "is_animated", False):  # not n_frames: that would decode every frame
        notices.append("first frame of a multi-frame image assessed")
    if _exif_rotated(img):
        notices.append("rotated according to its EXIF orientation")
    try:
        img = _to_rgb(ImageOps.exif_transpose(img), notices)
    except ImageError as e:
        raise ImageError(f"{name}: {e}") from None
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image is {w}x{h} pixels; at least {MIN_SIDE} pixels per side are needed.")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"{name}: image is {w}x{h} pixels, more than {MAX_ASPECT} times longer than wide; "
                         "crop it to a less extreme shape.")
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        ow, oh = orig_size or (w, h)
        notices.append(f"downscaled from {ow}x{oh} px to {img.size[0]}x{img.size[1]} (long side limit {max_side})")
    return LoadedImage(np.asarray(img, dtype=np.uint8).copy(), name, notices)


def _exif_rotated(img: Image.Image) -> bool:
    try:
        return img.getexif().get(EXIF_ORIENTATION, 1) in ROTATING_ORIENTATIONS
    except Exception:
        return False
