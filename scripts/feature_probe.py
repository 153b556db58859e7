"""Linear-probe diagnostics for a synthetic set: how much of the pseudo-MOS frozen backbone features carry.

For every image of a split's train / val / test parts, the frozen `lite` backbone (EfficientNet-Lite0,
ImageNet weights) runs on the centre crop of the distorted image x and of its reference, and
optionally on the restoration y0 of a diffusion checkpoint. Each crop becomes the `lite` VDA
branch's global vector g: the spatial mean and standard deviation of every channel of stages 1-4
(992 values). A ridge regression is fitted on the train part (its strength chosen on val) and
scored on val and test (SRCC) for these inputs:

- `x`: the no-reference baseline (what frozen features of the distorted image alone say), beside
  `x, pooled`: the classifier's pooled last-layer features of x (the global vector the VDA branch
  takes in the paper, as logits);
- `|g(x) - g(ref)|`: the VDA branch's difference input with a perfect restoration (y0 = reference),
  an upper bound of what restoration can add with these features and a linear head;
- `|g(x) - g(y0)|` (with --diffusion): the same with the checkpoint's actual restoration.

    python scripts/feature_probe.py --split-file data/synth_split.json [--diffusion runs/diffusion/last] \
        [--limit 0] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from iqa.assess import to_tensor
from iqa.backbones import Backbone, map_statistics
from iqa.config import lite
from iqa.data.splits import load_splits
from iqa.images import load_image
from iqa.metrics import correlations
from iqa.progress import progress_bar

RIDGE_STRENGTHS = (1.0, 10.0, 100.0, 1000.0, 10000.0)
BATCH = 32


def centre_crop(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return img[top:top + side, left:left + side]


class Statistics:
    """(B, 3, c, c) crops in [-1, 1] -> ((B, 2 * channels) spatial mean and std of every stage,
    (B, 1280) pooled last-layer features)."""

    def __init__(self):
        self.backbone = Backbone(lite().vcg.backbone).eval()  # the stages the lite VDA branch reads
        self.mean = torch.tensor(lite().mean).view(1, 3, 1, 1)
        self.std = torch.tensor(lite().std).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = ((crops + 1) / 2 - self.mean) / self.std
        maps, pooled = self.backbone(x, head="pooled")
        return map_statistics(maps).numpy(), pooled.numpy()


def ridge_srcc(feats: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """Fit ridge on train (standardised features), choose the strength by val SRCC; (lambda, val, test)."""
    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    z = {k: (v - mu) / sd for k, v in feats.items()}
    a, b = z["train"], y["train"] - y["train"].mean()
    best = None
    for lam in RIDGE_STRENGTHS:
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ b)
        val = correlations(z["val"] @ w, y["val"]).srcc
        if best is None or val > best[1]:
            best = (lam, val, correlations(z["test"] @ w, y["test"]).srcc)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split-file", required=True, help="a 7:1:2 or 6:2:2 split of a synthetic set (needs refs)")
    p.add_argument("--split-index", type=int, default=0)
    p.add_argument("--diffusion", default=None, help="checkpoint whose diffusion network restores y0")
    p.add_argument("--limit", type=int, default=0, help="at most this many images per part (0 = all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_splits(args.split_file)
    side = lite().crop
    restore = None
    if args.diffusion:
        from iqa.train_iqa_split import diffusion_from
        from iqa.diffusion import Diffusion

        dcfg, sd = diffusion_from(args.diffusion)
        restore = Diffusion(dcfg).eval()
        restore.load_state_dict(sd)
    stats = Statistics()
    rng = np.random.default_rng(args.seed)
    inputs: dict[str, dict[str, np.ndarray]] = {}
    y: dict[str, np.ndarray] = {}
    for part in ("train", "val", "test"):
        records = splits.part(args.split_index, part)
        if args.limit and len(records) > args.limit:
            records = [records[i] for i in sorted(rng.choice(len(records), args.limit, replace=False))]
        if any(r.ref is None for r in records):
            sys.exit(f"{args.split_file}: part '{part}' has images without a reference; the probe needs refs")
        y[part] = np.array([r.mos for r in records])
        rows: dict[str, list[np.ndarray]] = {"x": [], "pooled": [], "ref": [], "y0": []}
        for i in progress_bar(range(0, len(records), BATCH), desc=f"features {part}", unit="batch"):
            chunk = records[i:i + BATCH]
            x = torch.cat([to_tensor(centre_crop(load_image(r.image).array, side)) for r in chunk])
            ref = torch.cat([to_tensor(centre_crop(load_image(r.ref).array, side)) for r in chunk])
            for key, value in zip(("x", "pooled"), stats(x)):
                rows[key].append(value)
            rows["ref"].append(stats(ref)[0])
            if restore is not None:
                gen = torch.Generator().manual_seed(args.seed)
                rows["y0"].append(stats(restore.restore(x, generator=gen).y0)[0])
        g = {k: np.concatenate(v) for k, v in rows.items() if v}
        inputs.setdefault("x, pooled", {})[part] = g["pooled"]
        inputs.setdefault("x", {})[part] = g["x"]
        inputs.setdefault("|g(x) - g(ref)|", {})[part] = np.abs(g["x"] - g["ref"])
        if "y0" in g:
            inputs.setdefault("|g(x) - g(y0)|", {})[part] = np.abs(g["x"] - g["y0"])
            inputs.setdefault("x, |g(x) - g(y0)|", {})[part] = np.concatenate([g["x"], np.abs(g["x"] - g["y0"])], 1)
    print(f"\nRidge probe on {len(y['train'])} / {len(y['val'])} / {len(y['test'])} train / val / test images "
          f"({args.split_file}, split {args.split_index})\n")
    print("| input | ridge strength | val SRCC | test SRCC |\n|---|---|---|---|")
    for name, feats in inputs.items():
        lam, val, test = ridge_srcc(feats, y)
        print(f"| `{name}` | {lam:g} | {val:.3f} | {test:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
