"""The data side of `python -m iqa train`: training samples and evaluation crops drawn from the
diffusion-state cache (or the feature cache), and scoring a list of records with the K fixed crops."""
from __future__ import annotations

from itertools import islice
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from iqa.cache import DiffusionCache, FeatureCache, FeatureLayout
from iqa.data.records import Record
from iqa.metrics import MIN_PAIRS, Correlations, correlations
from iqa.model import DiffV2IQA
from iqa.training import DistInfo

EVAL_CROPS_PER_BATCH = 16  # crops per forward pass when scoring val / test images
FLIP_PROBABILITY = 0.5


class Scorer(nn.Module):
    """What DDP wraps: uint8 states (B, 4, 3, c, c) -> scores (B,), or, with a `FeatureLayout`,
    cached feature rows (B, D) -> scores (B,) through the heads only."""

    def __init__(self, model: DiffV2IQA, layout: FeatureLayout | None = None):
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.layout is None:
            return self.model(batch.float() / 127.5 - 1).score
        return self.model.heads(self.layout.decode(batch)).score


class SkipSampler(Sampler):
    """The first `skip` indices of `base` left out (resuming mid-epoch)."""

    def __init__(self, base: Sampler, skip: int):
        self.base, self.skip = base, skip

    def __iter__(self):
        return islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


class TrainSet(Dataset):
    """Training samples: a random crop window + random flip of the four states (or a random cached
    feature row with frozen backbones) and the normalised MOS. Randomness comes from
    (seed, epoch, index), so it does not depend on workers, processes or resuming."""

    def __init__(self, records: list[Record], states: DiffusionCache, features: FeatureCache | None, seed: int):
        self.paths = [r.image for r in records]
        self.mos = [float(r.mos) for r in records]
        self.states, self.features, self.seed = states, features, seed
        self.crop = states.assessor.cfg.crop
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        target = torch.tensor(self.mos[i], dtype=torch.float32)
        if self.features is not None:
            rows = self.features.get(self.paths[i])
            return torch.from_numpy(np.array(rows[rng.integers(len(rows))])), target
        entry = self.states.get(self.paths[i])
        x0, y0, x1, y1 = (int(v) for v in entry.boxes[rng.integers(len(entry.boxes))])
        c = self.crop
        ox = x0 + int(rng.integers(x1 - x0 - c + 1))
        oy = y0 + int(rng.integers(y1 - y0 - c + 1))
        s = entry.crop((ox, oy, ox + c, oy + c))
        if rng.random() < FLIP_PROBABILITY:
            s = np.ascontiguousarray(s[..., ::-1])
        return torch.from_numpy(s), target


class EvalSet(Dataset):
    """The K fixed crops of one image: uint8 states (n, 4, 3, c, c), or feature rows (n, D)."""

    def __init__(self, records: list[Record], states: DiffusionCache, features: FeatureCache | None):
        self.paths = [r.image for r in records]
        self.states, self.features = states, features

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.features is not None:
            rows = self.features.get(self.paths[i])
            return torch.from_numpy(np.array(rows[: len(rows) // self.features.variants_per_crop]))
        entry = self.states.get(self.paths[i])
        return torch.from_numpy(np.stack([entry.crop(b) for b in self.states.eval_boxes(entry)]))


def _keep_list(items: list[torch.Tensor]) -> list[torch.Tensor]:
    """Collate for `EvalSet`: images may have different crop counts, so keep them apart."""
    return items


@torch.no_grad()
def predict(scorer: Scorer, records: list[Record], states: DiffusionCache, features: FeatureCache | None,
            device: torch.device, workers: int = 0, dist: DistInfo | None = None) -> np.ndarray:
    """Scores (N,) of `records`: mean over each image's K fixed crops. With several processes each
    scores a share and the results are gathered."""
    dist = dist or DistInfo()
    if not records:
        return np.zeros(0)
    mine = list(range(dist.rank, len(records), dist.world))
    per_image = max(1, EVAL_CROPS_PER_BATCH // states.crops)
    loader = DataLoader(EvalSet([records[i] for i in mine], states, features), batch_size=per_image,
                        num_workers=workers, collate_fn=_keep_list)
    was_training = scorer.training
    scorer.eval()
    out: list[float] = []
    try:
        for items in loader:
            counts = [len(t) for t in items]
            batch = torch.cat(items).to(device, non_blocking=True)
            # float32: bf16 would quantise the scores (~2e-3) that SRCC and the best checkpoint rest on
            scores = torch.cat([scorer(chunk) for chunk in batch.split(EVAL_CROPS_PER_BATCH)]).float().cpu()
            out.extend(float(s.mean()) for s in scores.split(counts))
    finally:
        scorer.train(was_training)
    if dist.world == 1:
        return np.array(out)
    gathered: list[Any] = [None] * dist.world
    tdist.all_gather_object(gathered, list(zip(mine, out)))
    result = np.zeros(len(records))
    for part in gathered:
        for i, v in part:
            result[i] = v
    return result


def correlate(pred: np.ndarray, records: list[Record]) -> Correlations | None:
    """Correlations of predictions (N,) with the records' MOS, or None below `MIN_PAIRS` records."""
    if len(records) < MIN_PAIRS:
        return None
    return correlations(pred, [r.mos for r in records])
