import pytest
import torch

from iqa.config import UNetConfig
from iqa.unet import UNet


def tiny(**kw) -> UNetConfig:
    base = dict(inner_channel=8, channel_mults=(1, 2), attn_levels=(1,), res_blocks=1, dropout=0.0,
                norm="group", norm_groups=4)
    base.update(kw)
    return UNetConfig(**base)


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize(
    "cfg_kw,size",
    [({}, (16, 16)), ({}, (10, 22)), ({"channel_mults": (1, 2, 2), "attn_levels": (0, 2)}, (24, 36))],
)
def test_output_shape(norm, cfg_kw, size):
    net = UNet(tiny(norm=norm, **cfg_kw))
    x = torch.randn(2, 6, *size)
    y = net(x, torch.tensor([0.3, 0.9]))
    assert y.shape == (2, 3, *size)
    assert torch.isfinite(y).all()


def test_noise_level_changes_output():
    torch.manual_seed(0)
    net = UNet(tiny()).eval()
    x = torch.randn(1, 6, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([0.2])), net(x, torch.tensor([0.95])))


def test_gradients_flow():
    torch.manual_seed(0)
    net = UNet(tiny(norm="batch", dropout=0.1))
    x = torch.randn(2, 6, 16, 16, requires_grad=True)
    net(x, torch.tensor([0.5, 0.7])).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing
    assert net.noise_mlp[1].weight.grad.abs().sum() > 0


def test_bad_size_raises():
    net = UNet(tiny(channel_mults=(1, 2, 2)))
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.randn(1, 6, 18, 16), torch.tensor([0.5]))


def test_bad_config_and_input_raise():
    with pytest.raises(ValueError, match="norm_groups"):
        UNet(tiny(norm_groups=3))
    with pytest.raises(ValueError, match="norm"):
        UNet(tiny(norm="layer"))
    with pytest.raises(ValueError, match="attn_levels"):
        UNet(tiny(attn_levels=(2,)))
    net = UNet(tiny())
    with pytest.raises(ValueError, match="6, H, W"):
        net(torch.randn(1, 3, 16, 16), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="gamma"):
        net(torch.randn(2, 6, 16, 16), torch.tensor([0.5, 0.5, 0.5]))
