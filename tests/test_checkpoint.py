import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from iqa.assess import Assessor
from iqa.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from tests.helpers import photo, tiny_model


def test_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model(seed=3)
    save_checkpoint(model, tmp_path / "ck", card={"training_data": "none"})
    cfg, card = read_metadata(tmp_path / "ck")
    assert cfg == model.cfg and card["training_data"] == "none" and card["parameters"]["total"] > 0
    loaded, _ = load_checkpoint(tmp_path / "ck" / "model.safetensors")
    img = photo(240, 230)
    a = Assessor(model, device="cpu").assess(img, crops=2, seed=1)
    b = Assessor(loaded, device="cpu").assess(img, crops=2, seed=1)
    assert a.score == b.score and np.array_equal(a.restored, b.restored)
    assert np.array_equal(a.vcg.score, b.vcg.score, equal_nan=True)


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        read_metadata(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_metadata(tmp_path)


@pytest.mark.parametrize("card, match", [("null", "not a JSON object"), ("{oops", "not valid JSON")])
def test_a_card_that_is_not_an_object_is_refused(tmp_path, card, match):
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"),
              metadata={"config": tiny_model().cfg.to_json(), "card": card})
    with pytest.raises(CheckpointError, match=match):
        read_metadata(tmp_path)


def test_a_model_folded_for_inference_is_not_saved_but_keeps_its_parameter_counts(tmp_path):
    model = tiny_model()
    counts = model.parameter_counts()
    Assessor(model, device="cpu", fold_batchnorm=True)
    assert model.batchnorm_folded and model.parameter_counts() == counts
    with pytest.raises(ValueError, match="folded"):
        save_checkpoint(model, tmp_path / "ckpt")
