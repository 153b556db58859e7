"""Re-create the example images of the app from scikit-image's `chelsea` photo (CC0; see SOURCES.md).

    python assets/make_examples.py
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from skimage.data import chelsea

OUT = Path(__file__).resolve().parent
CLEAN_QUALITY = 95  # JPEG quality of the reference copy (visually lossless)
BLUR_RADIUS = 3.0  # Gaussian blur radius, px
NOISE_SIGMA = 25.0  # additive Gaussian noise, on 0-255
NOISE_SEED = 0
JPEG_QUALITY = 8  # heavy compression: visible blocking


def jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def main() -> None:
    clean = Image.fromarray(chelsea())
    rng = np.random.default_rng(NOISE_SEED)
    noisy = np.asarray(clean, np.float64) + rng.normal(0, NOISE_SIGMA, (*clean.size[::-1], 3))
    outputs = {
        "chelsea_clean.jpg": jpeg(clean, CLEAN_QUALITY),
        "chelsea_blur.jpg": jpeg(clean.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)), CLEAN_QUALITY),
        "chelsea_noise.jpg": jpeg(Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8)), CLEAN_QUALITY),
        "chelsea_jpeg.jpg": jpeg(clean, JPEG_QUALITY),
    }
    for name, data in outputs.items():
        (OUT / name).write_bytes(data)
        print(f"{name}: {len(data) // 1024} KB")


if __name__ == "__main__":
    main()
