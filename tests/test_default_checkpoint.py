"""The bundled default checkpoint: loads offline, is trained, and ranks the bundled examples."""
import json
from pathlib import Path

import pytest

from iqa import assess
from iqa.checkpoint import read_metadata

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"
DISTORTED = ("chelsea_blur.jpg", "chelsea_noise.jpg", "chelsea_jpeg.jpg")
MAX_MB = 100


@pytest.fixture(scope="module")
def assessor():
    return assess.load(device="cpu")  # no name = checkpoints/default


def test_bundled_checkpoint_is_complete_and_small():
    folder = assess.DEFAULT_CHECKPOINT
    for name in ("model.safetensors", "config.json", "card.json"):
        assert (folder / name).is_file(), f"{folder / name} missing"
    assert (folder / "model.safetensors").stat().st_size < MAX_MB * 2**20
    cfg, card = read_metadata(folder)
    assert cfg.name == "lite" and card.get("trained") is True
    assert json.loads((folder / "card.json").read_text()) == card
    assert card["diffusion_training"]["diffusion_steps"] > 0


def test_clean_example_scores_above_its_distorted_versions(assessor):
    clean = assessor.assess(ASSETS / "chelsea_clean.jpg").score
    for name in DISTORTED:
        a = assessor.assess(ASSETS / name)
        assert 0.0 <= a.score <= 1.2, f"{name}: score {a.score} outside the label range"
        assert a.score < clean, f"{name} scored {a.score:.3f}, not below the clean photo's {clean:.3f}"
