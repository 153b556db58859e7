"""The bundled default checkpoint (checkpoints/default): present, small enough, documented, and its
scores rank the bundled examples: the clean photo above each of its distorted versions."""
from pathlib import Path

import pytest

import iqa
from iqa.assess import DEFAULT_CHECKPOINT
from iqa.checkpoint import CARD, CONFIG, WEIGHTS, read_metadata

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MAX_BYTES = 100 * 2**20  # the limit for everything bundled in checkpoints/


def test_default_checkpoint_is_bundled_with_its_card():
    for name in (WEIGHTS, CONFIG, CARD):
        assert (DEFAULT_CHECKPOINT / name).is_file(), f"checkpoints/default/{name} missing"
    assert sum(f.stat().st_size for f in DEFAULT_CHECKPOINT.parent.rglob("*") if f.is_file()) <= MAX_BYTES
    cfg, card = read_metadata(DEFAULT_CHECKPOINT)
    assert cfg.name == "lite" and card.get("trained") is True
    ev = card["evaluation"]  # written by `python -m iqa bundle` from the levels test (and/or the crop report)
    assert "pseudo-MOS" in ev["labels"] and isinstance(ev["passed"], bool) and ev["checks"]
    if "levels" in ev:
        lv = ev["levels"]
        assert lv["photos"] > 0 and -1 <= lv["rho"] <= 1 and {"BRISQUE", "NIQE"} <= set(lv["others"])
    else:
        assert 0 < ev["test_images"] and -1 <= ev["test"]["srcc"] <= 1


@pytest.fixture(scope="module")
def scores() -> dict[str, float]:
    model = iqa.load(device="cpu")  # no name: the bundled default
    return {p.stem: model.assess(p, seed=0).score for p in sorted(ASSETS.glob("chelsea_*.jpg"))}


def test_clean_example_scores_above_its_distorted_versions(scores):
    distorted = {k: v for k, v in scores.items() if k != "chelsea_clean"}
    assert len(distorted) == 3, scores
    assert all(scores["chelsea_clean"] > v for v in distorted.values()), scores
