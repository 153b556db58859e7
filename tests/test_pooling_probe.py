"""scripts/pooling_probe.py: poolings of the crops' scores, recomputed from one scoring pass."""

import numpy as np
import pytest
from PIL import Image

from helpers import load_script, photo


def test_pooled_keeps_the_best_share():
    probe = load_script("pooling_probe")
    assert probe.pooled([0.1, 0.9, 0.5, 0.7], 1) == pytest.approx(np.mean([0.1, 0.9, 0.5, 0.7]))
    assert probe.pooled([0.1, 0.9, 0.5, 0.7], 0.75) == pytest.approx(np.mean([0.9, 0.5, 0.7]))
    assert probe.pooled([0.1, 0.9, 0.5, 0.7], 0.5) == pytest.approx(np.mean([0.9, 0.7]))
    assert probe.pooled([0.3], 0.1) == 0.3


def _sharpness_crops(a: np.ndarray) -> list[float]:
    """A stand-in scorer: per vertical third of the image, the mean absolute horizontal gradient."""
    g = np.abs(np.diff(a.astype(float).mean(-1), axis=1))
    return [float(t.mean()) for t in np.array_split(g, 3, axis=1)]


def test_probe_scores_once_and_summarises_each_pooling(tmp_path):
    probe = load_script("pooling_probe")
    paths = []
    for i, (w, h) in enumerate([(256, 240), (240, 256)]):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(photo(w, h)).save(paths[-1])
    calls = []

    def scorer(a):
        calls.append(1)
        return _sharpness_crops(a)

    cache = probe.CropScores(tmp_path / "crops.jsonl")
    levels, halves = probe.probe(paths, scorer, [1, 0.5], cache)
    n_images = 2 * (1 + 6 * 5 + 4)  # clean, 6 kinds x 5 levels, 2 damages x 2 sides
    assert len(calls) == n_images
    assert [m.series for m in levels] == [12, 12]
    blur = levels[0].per_kind["blur"]
    assert blur == 1.0  # a gradient-energy scorer falls with every blur level
    assert [h.cases for h in halves] == [8, 8] and all(h.mean_drop != 0 for h in halves)
    again, _ = probe.probe(paths, lambda a: (_ for _ in ()).throw(AssertionError("not cached")), [1, 0.5],
                           probe.CropScores(tmp_path / "crops.jsonl"))
    assert [m.rho for m in again] == [m.rho for m in levels]
