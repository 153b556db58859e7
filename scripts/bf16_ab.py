"""Which bf16 setting is faster? Two settings of one checkpoint timed in one process, interleaved.

On a shared host the speed of the machine drifts between runs of `python -m iqa benchmark` (BRISQUE's
own time moves by half), so two settings timed one after the other can swap places. Here each round
assesses the benchmark's 512x384 photo once with each setting (a new seed every round, so nothing is
served from memory) and the first round is a warm-up; best and median per setting and per stage.

    python scripts/bf16_ab.py --a diffusion,vcg --b diffusion,backbones,vcg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iqa.assess import load
from iqa.benchmark import test_image
from iqa.score import parse_bf16


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled one)")
    p.add_argument("--a", type=parse_bf16, default="none", help="bf16 stages of setting A (default none)")
    p.add_argument("--b", type=parse_bf16, default="auto", help="bf16 stages of setting B (default auto)")
    p.add_argument("--rounds", type=int, default=20, help="rounds, the first a warm-up (default 20)")
    args = p.parse_args(argv)
    image = test_image((512, 384))
    settings = {"A": load(args.checkpoint, device="cpu", bf16=args.a),
                "B": load(args.checkpoint, device="cpu", bf16=args.b)}
    timings: dict[str, list[dict]] = {k: [] for k in settings}
    for i in range(args.rounds):
        for name, assessor in settings.items():
            timings[name].append(assessor.assess(image, seed=i).timings)
    for name, assessor in settings.items():
        runs = timings[name][1:]
        total = np.array([t["total"] for t in runs])
        stages = ", ".join(f"{s} {np.median([t[s] for t in runs]):.3f}" for s in ("diffusion", "backbones", "vcg"))
        print(f"{name} (bf16: {', '.join(assessor.bf16) or 'none'}): best {total.min():.3f} s, median "
              f"{np.median(total):.3f} s over {len(runs)} rounds; median per stage: {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
