import csv
import os

import numpy as np
import pytest
from PIL import Image, ImageFilter

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


PHOTOS = ("astronaut", "chelsea", "coffee")
SIZE = 96


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory):
    """(distorted, reference) pairs in the generic layout: 3 photos x 2 levels of blur + noise,
    labelled as two distortion kinds (level 1 "blur", level 2 "noise") in the CSV's last column."""
    import skimage.data

    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    rows = []
    for name in PHOTOS:
        ref = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((SIZE, SIZE))
        (root / "refs").mkdir(exist_ok=True)
        ref.save(root / "refs" / f"{name}.png")
        for level in (1, 2):
            a = np.asarray(ref.filter(ImageFilter.GaussianBlur(level)), dtype=np.float64)
            a = np.clip(a + rng.normal(0, 8 * level, a.shape), 0, 255).astype(np.uint8)
            (root / "images").mkdir(exist_ok=True)
            Image.fromarray(a).save(root / "images" / f"{name}_{level}.png")
            rows.append({"image": f"images/{name}_{level}.png", "ref": f"refs/{name}.png", "mos": 1 - 0.3 * level,
                         "group": name, "distortion": ("blur", "noise")[level - 1]})
    with (root / "meta.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root
