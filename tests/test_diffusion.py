import dataclasses
import math

import pytest
import torch
from torch import nn

from iqa.config import DiffusionConfig, UNetConfig
from iqa.diffusion import Diffusion, Restoration, pad_to_multiple
from iqa.schedule import alpha_bars


def tiny_cfg(**kw) -> DiffusionConfig:
    unet = UNetConfig(inner_channel=8, channel_mults=(1, 2), attn_levels=(1,), res_blocks=1, dropout=0.0,
                      norm="group", norm_groups=4)
    base = dict(unet=unet, sample_steps=6, keep_steps=(1, 3), train_steps=50)
    base.update(kw)
    return DiffusionConfig(**base)


def images(b=2, h=16, w=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class OracleUNet(nn.Module):
    """Predicts the exact noise of x_t = γ·target + sqrt(1 − γ²)·ε, so x̂0 = target."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = target

    def forward(self, x, gamma):
        g = gamma[:, None, None, None]
        return (x[:, 3:] - g * self.target) / (1 - g**2).sqrt()


@pytest.fixture(scope="module")
def model() -> Diffusion:
    torch.manual_seed(0)
    return Diffusion(tiny_cfg())


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_restore_returns_kept_states(model, sampler):
    calls = []
    r = model.restore(images(), steps=6, sampler=sampler, keep_steps=(2, 4), generator=gen(0),
                      progress=lambda i, n: calls.append((i, n)))
    assert isinstance(r, Restoration)
    ab = alpha_bars(model.cfg, 6)
    assert r.steps == (2, 4) and r.n_steps == 6 and r.sampler == sampler
    assert r.alpha_bars == pytest.approx((ab[2].item(), ab[4].item()))
    assert r.alpha_bars[0] > r.alpha_bars[1]
    for y in (r.y0, r.y1, r.y2):
        assert y.shape == (2, 3, 16, 16)
        assert y.min() >= -1 and y.max() <= 1
    assert calls == [(i, 6) for i in range(1, 7)]
    assert not torch.equal(r.y1, r.y2) and not torch.equal(r.y0, r.y1)


def test_defaults_come_from_config(model):
    r = model.restore(images(b=1), generator=gen(0))
    assert r.steps == (1, 3) and r.n_steps == 6 and r.sampler == "ancestral"


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_noise_decreases_with_oracle(sampler):
    """With a perfect denoiser y0 = target and y_k = sqrt(ᾱ)·target + noise of std sqrt(1 − ᾱ)."""
    torch.manual_seed(0)
    d = Diffusion(tiny_cfg())
    target = 0.2 * torch.sin(torch.linspace(0, 6, 64))[None, None, None].expand(2, 3, 64, 64)
    d.unet = OracleUNet(target)
    r = d.restore(images(h=64, w=64), steps=50, sampler=sampler, keep_steps=(5, 10), generator=gen(1))
    assert torch.allclose(r.y0, target, atol=1e-4)
    stds = []
    for y, ab in ((r.y1, r.alpha_bars[0]), (r.y2, r.alpha_bars[1])):
        std = (y - math.sqrt(ab) * target).std().item()
        assert std == pytest.approx(math.sqrt(1 - ab), rel=0.05)
        stds.append(std)
    assert stds[0] < stds[1]
    assert r.alpha_bars == pytest.approx((0.972, 0.899), abs=1e-3)


def test_keep_last_step_is_starting_noise(model):
    r = model.restore(images(b=1), steps=4, keep_steps=(1, 4), generator=gen(3))
    assert torch.equal(r.y2, torch.randn(1, 3, 16, 16, generator=gen(3)).clamp(-1, 1))


@pytest.mark.parametrize("size", [(37, 53), (3, 5), (1, 1)])
def test_odd_sizes_come_back_same_size(size):
    torch.manual_seed(0)
    d = Diffusion(tiny_cfg(unet=UNetConfig(inner_channel=8, channel_mults=(1, 2, 2), attn_levels=(), res_blocks=1,
                                           dropout=0.0, norm="batch")))
    r = d.restore(images(b=1, h=size[0], w=size[1]), steps=2, keep_steps=(1, 2), generator=gen(0))
    assert r.y0.shape == r.y1.shape == r.y2.shape == (1, 3, *size)


def test_pad_to_multiple():
    x = images(b=1, h=37, w=53)
    p, (left, right, top, bottom) = pad_to_multiple(x, 16)
    assert p.shape[-2:] == (48, 64) and (left + right, top + bottom) == (11, 11)
    assert torch.equal(p[..., top:top + 37, left:left + 53], x)
    small, pads = pad_to_multiple(images(b=1, h=2, w=3), 8)  # too small to reflect: replicate
    assert small.shape[-2:] == (8, 8) and torch.equal(small[..., 0, 0], small[..., pads[2], pads[0]])


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_seeded_determinism(model, sampler):
    x = images(b=1)
    a = model.restore(x, sampler=sampler, generator=gen(7))
    b = model.restore(x, sampler=sampler, generator=gen(7))
    c = model.restore(x, sampler=sampler, generator=gen(8))
    assert torch.equal(a.y0, b.y0) and torch.equal(a.y2, b.y2)
    assert not torch.allclose(a.y0, c.y0)


def test_given_starting_noise_replaces_the_generator(model):
    cond = torch.rand(1, 3, 20, 20) * 2 - 1
    noise = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    a = model.restore(cond, noise=noise, sampler="ddim")
    b = model.restore(cond, noise=noise.clone(), sampler="ddim", generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.y0, b.y0) and torch.equal(a.y2, b.y2)
    with pytest.raises(ValueError, match="starting noise"):
        model.restore(cond, noise=noise[..., :10])


def test_restore_keeps_train_mode_and_no_grad(model):
    model.train()
    r = model.restore(images(b=1), generator=gen(0))
    assert model.unet.training and not r.y0.requires_grad
    model.eval()


@pytest.mark.parametrize("kw,match", [
    ({"keep_steps": (0, 2)}, "keep_steps"),
    ({"keep_steps": (3, 3)}, "keep_steps"),
    ({"keep_steps": (2, 7)}, "keep_steps"),
    ({"keep_steps": (1,)}, "keep_steps"),
    ({"steps": 0}, "steps"),
    ({"sampler": "euler"}, "sampler"),
])
def test_bad_restore_arguments(model, kw, match):
    with pytest.raises(ValueError, match=match):
        model.restore(images(b=1), **{"steps": 6, **kw})


def test_bad_images_raise(model):
    with pytest.raises(ValueError, match="B, 3, H, W"):
        model.restore(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="differ"):
        model.loss(images(h=16), images(h=32))


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_loss_backward_reaches_noise_mlp(loss):
    torch.manual_seed(0)
    d = Diffusion(tiny_cfg(loss=loss))
    value = d.loss(images(seed=1), images(seed=2), generator=gen(0))
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert d.unet.noise_mlp[1].weight.grad.abs().sum() > 0
    assert d.unet.noise_mlp[3].weight.grad.abs().sum() > 0


def test_adam_lowers_loss_on_fixed_batch():
    torch.manual_seed(0)
    d = Diffusion(tiny_cfg())
    x0, cond = images(seed=1), images(seed=2)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    first = d.loss(x0, cond, generator=gen(0)).item()
    for _ in range(15):
        opt.zero_grad()
        d.loss(x0, cond, generator=gen(0)).backward()
        opt.step()
    assert d.loss(x0, cond, generator=gen(0)).item() < 0.9 * first


class ResidualOracle(nn.Module):
    """Predicts the exact clean residual reference − cond (x0 prediction)."""

    def __init__(self, reference: torch.Tensor):
        super().__init__()
        self.reference = reference

    def forward(self, x, gamma):
        return self.reference - x[:, :3]


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_residual_x0_oracle_restores_reference(sampler):
    d = Diffusion(tiny_cfg(target="residual", predict="x0"))
    cond = images(h=32, w=32, seed=4).clamp(-0.9, 0.9)
    reference = (cond + 0.05 * images(h=32, w=32, seed=5)).clamp(-1, 1)
    d.unet = ResidualOracle(reference)
    r = d.restore(cond, steps=10, sampler=sampler, keep_steps=(2, 5), generator=gen(0))
    assert torch.allclose(r.y0, reference, atol=1e-5)
    # intermediates are the restored image plus noise whose std grows with the step
    spread = [(y - reference).std().item() for y in (r.y1, r.y2)]
    assert 0 < spread[0] < spread[1]


def test_untrained_residual_x0_returns_the_input():
    torch.manual_seed(0)
    d = Diffusion(tiny_cfg(target="residual", predict="x0"))
    cond = images(h=32, w=32, seed=6)
    r = d.restore(cond, generator=gen(0))
    assert torch.equal(r.y0, cond)
    assert d.loss(images(h=32, w=32, seed=7), cond, generator=gen(0)).item() > 0


def test_residual_x0_training_moves_towards_reference():
    torch.manual_seed(0)
    d = Diffusion(tiny_cfg(target="residual", predict="x0", loss="l2"))
    cond = images(h=16, w=16, seed=8) * 0.5
    reference = cond + 0.3  # a brightness shift the network must learn to undo
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    before = (d.restore(cond, generator=gen(0)).y0 - reference).abs().mean().item()
    for i in range(60):
        opt.zero_grad()
        d.loss(reference, cond, generator=gen(i)).backward()
        opt.step()
    after = (d.restore(cond, generator=gen(0)).y0 - reference).abs().mean().item()
    assert after < 0.5 * before


@pytest.mark.parametrize("field, value", [("target", "noise"), ("predict", "v")])
def test_unknown_target_or_prediction(field, value):
    with pytest.raises(ValueError, match=field if field == "target" else "prediction"):
        Diffusion(tiny_cfg(**{field: value}))


@pytest.mark.parametrize("size", [(37, 53), (16, 16)])
def test_half_resolution_unet_keeps_full_resolution_states(size):
    torch.manual_seed(0)
    d = Diffusion(tiny_cfg(target="residual", predict="x0", unet_scale=2))
    assert d.size_multiple == 2 * d.cfg.unet.size_multiple
    x = images(b=1, h=size[0], w=size[1], seed=9)
    assert d.predict(pad_to_multiple(torch.cat([x, x], 1), d.size_multiple)[0], torch.full((1,), 0.5)).shape[1] == 3
    r = d.restore(x, generator=gen(0))
    assert r.y0.shape == r.y1.shape == r.y2.shape == (1, 3, *size)
    # the noise of y2 is drawn at full resolution: its pixel-to-pixel variation is not halved
    noise = (r.y2 - r.y0)[..., : size[0] // 2 * 2, : size[1] // 2 * 2]
    pooled = torch.nn.functional.avg_pool2d(noise, 2)
    assert noise.std() > 1.5 * pooled.std()
    # training runs the U-Net at full resolution whatever the sampling setting
    full = Diffusion(dataclasses.replace(d.cfg, unet_scale=1))
    full.load_state_dict(d.state_dict())
    ref, cond = images(h=32, w=32, seed=10), images(h=32, w=32, seed=11)
    assert d.loss(ref, cond, generator=gen(0)).item() == full.loss(ref, cond, generator=gen(0)).item() > 0


@pytest.mark.parametrize("scale", [0, 1.5])
def test_bad_unet_scale(scale):
    with pytest.raises(ValueError, match="unet_scale"):
        Diffusion(tiny_cfg(unet_scale=scale))


@pytest.mark.parametrize("steps", [-1, 0.5])
def test_bad_full_res_steps(steps):
    with pytest.raises(ValueError, match="full_res_steps"):
        Diffusion(tiny_cfg(full_res_steps=steps))


def test_full_res_steps_run_the_last_steps_at_full_resolution():
    torch.manual_seed(0)
    d = Diffusion(tiny_cfg(target="residual", predict="x0", unet_scale=2, full_res_steps=2))
    scales = []
    predict = d.predict
    d.predict = lambda x, gamma, scale=None: scales.append(scale) or predict(x, gamma, scale)
    d.restore(images(b=1, h=32, w=32, seed=3), steps=5, keep_steps=(1, 2), generator=gen(0))
    assert scales == [2, 2, 2, 1, 1]  # t = 5, 4, 3 at half resolution; t = 2, 1 at full
