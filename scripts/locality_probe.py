"""Where in the VCG branch does a patch lose track of *where* it is? A linear probe per stage.

    python scripts/locality_probe.py --photos ../shared/pristine [--checkpoint checkpoints/default]

Training photos (the split's train part) get their left or right half damaged (blur + noise, as
`python -m iqa localise` does); a 224 crop across the middle is assessed with one crop, and the
features of every token cell are captured at the VCG's input (the selected backbone maps) and after
each of its stages. A ridge regression fitted on most crops predicts "damaged" per cell from one
cell's features alone; the AUC on the remaining crops says how much of the local evidence that stage
still holds at each position (1 = all, 0.5 = none). The per-patch scores can only localise what their
input keeps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from scipy.stats import mannwhitneyu

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import iqa  # noqa: E402
from iqa.data.stream import StreamConfig, training_photos  # noqa: E402
from iqa.images import load_image  # noqa: E402
from iqa.localise import damage  # noqa: E402

STAGES = ("tab1", "swin1", "tab2", "swin2")
HELD_OUT_CROPS = 4
RIDGE = 10.0


def cells(t: torch.Tensor, n: int) -> torch.Tensor:
    """Any stage output of one crop -> (n, C) per-cell features."""
    t = t[0]
    if t.dim() == 3:  # (C, g, g)
        return t.flatten(1).T
    return t if t.shape[0] == n else t.T  # (N, C) or (C, N)


def probe_auc(x: list[torch.Tensor], y: list[torch.Tensor]) -> float:
    """Ridge fit on all but the last crops, AUC of damaged vs clean cells on those."""
    xs, ys = torch.stack(x).double(), torch.stack(y).double()
    xs = (xs - xs.mean((0, 1))) / (xs.std((0, 1)) + 1e-9)
    fit = -HELD_OUT_CROPS
    a, b = xs[:fit].reshape(-1, xs.shape[-1]), ys[:fit].reshape(-1)
    w = torch.linalg.solve(a.T @ a + RIDGE * torch.eye(a.shape[1], dtype=a.dtype), a.T @ (b - b.mean()))
    p, t = (xs[fit:] @ w).reshape(-1).numpy(), ys[fit:].reshape(-1).numpy()
    return float(mannwhitneyu(p[t > 0.5], p[t < 0.5]).statistic / ((t > 0.5).sum() * (t < 0.5).sum()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", required=True, help="folder of pristine photos (its train part is used)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled one)")
    p.add_argument("--count", type=int, default=10, help="photos (two crops each: left or right damaged)")
    args = p.parse_args()
    torch.manual_seed(0)
    assessor = iqa.load(args.checkpoint) if args.checkpoint else iqa.load()
    vcg = assessor.model.vcg
    side = assessor.model.cfg.crop
    grabbed: dict[str, torch.Tensor] = {}
    vcg.register_forward_pre_hook(lambda m, i: grabbed.__setitem__("input", i[0].detach()))
    for name in STAGES:
        getattr(vcg, name).register_forward_hook(lambda m, i, o, name=name: grabbed.__setitem__(name, o.detach()))
    g = vcg.cfg.grid
    cols = torch.arange(g)[None, :].expand(g, g).reshape(-1)
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in ("input", *STAGES)}
    labels = []
    for path in training_photos(StreamConfig(photos=args.photos, part="train"))[:args.count]:
        image = load_image(path).array
        h, w = image.shape[:2]
        for half in ("left", "right"):
            crop = damage(image, "blur+noise", half)[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
            assessor.assess(crop, crops=1, seed=0)
            for k in feats:
                feats[k].append(cells(grabbed[k], g * g).float())
            labels.append(((cols >= g // 2) if half == "right" else (cols < g // 2)).float())
    print(f"{len(labels)} half-damaged {side}px crops of training photos, {g}x{g} cells; checkpoint "
          f"{args.checkpoint or 'bundled'}")
    print("| VCG stage | cell features | probe AUC damaged vs clean |\n|---|---|---|")
    for k, x in feats.items():
        print(f"| {'backbone maps (input)' if k == 'input' else k} | {x[0].shape[-1]} | {probe_auc(x, labels):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
