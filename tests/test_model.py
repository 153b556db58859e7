import dataclasses

import pytest
import torch

from iqa.config import preset
from iqa.model import DiffV2IQA
from tests.helpers import FixedPattern, tiny_model


def test_gradients_reach_both_branches_and_noise_embeddings():
    model = tiny_model().train()
    states = torch.rand(2, 4, 3, 224, 224) * 2 - 1
    q = model(states)
    g = model.cfg.vcg.grid
    assert q.score.shape == (2,) and q.f1.shape == q.w1.shape == q.f2.shape == (2, g, g)
    (q.score - torch.tensor([0.3, 0.8])).pow(2).mean().backward()
    emb = model.vcg.noise_embed.grad
    assert emb is not None and emb.abs().sum() > 0
    for name, module in [("vcg head", model.vcg.head), ("vda rtab", model.vda.rtab), ("backbone", model.backbone)]:
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_score_is_sum_of_branches_with_weight():
    model = tiny_model()
    model.cfg.vcg_weight, model.cfg.vda_weight = 0.25, 0.5
    with torch.no_grad():
        q = model(torch.rand(1, 4, 3, 224, 224) * 2 - 1)
    assert torch.allclose(q.score, 0.25 * q.s1 + 0.5 * q.s2)
    assert model.cfg.fusion_text() == "S = 0.25·S1 + 0.5·S2"


def test_single_branch_and_no_diffusion_variants():
    cfg = preset("tiny")
    for change in [dict(use_vcg=False), dict(use_vda=False), dict(use_diffusion=False)]:
        model = DiffV2IQA(dataclasses.replace(cfg, **change)).eval()
        with torch.no_grad():
            q = model(torch.zeros(1, 4, 3, 224, 224))
        assert q.score.shape == (1,)
        assert (q.s1 is None) == (not change.get("use_vcg", True))
        assert (q.s2 is None) == (not change.get("use_vda", True))
        assert (model.diffusion is None) == (not change.get("use_diffusion", True))
    with pytest.raises(ValueError, match="branch"):
        DiffV2IQA(dataclasses.replace(cfg, use_vcg=False, use_vda=False))


def test_no_diffusion_runs_the_backbone_once_with_the_same_result():
    full = tiny_model()
    single = tiny_model(use_diffusion=False)
    single.load_state_dict(full.state_dict(), strict=False)  # same heads and backbone; no diffusion net
    x = torch.rand(2, 1, 3, 224, 224) * 2 - 1
    calls = []
    single.backbone.register_forward_hook(lambda _m, inp, _out: calls.append(inp[0].shape[0]))
    with torch.no_grad():
        expected = full(x.expand(-1, 4, -1, -1, -1)).score
        got = single(x.expand(-1, 4, -1, -1, -1)).score
    assert calls == [2]  # one pass over the 2 crops, not 8
    assert torch.allclose(got, expected, atol=1e-5)


def test_frozen_backbone_gets_no_gradient():
    cfg = preset("tiny")
    cfg.vcg.backbone.frozen = True
    model = DiffV2IQA(cfg).train()
    assert not model.backbone.training
    model(torch.rand(1, 4, 3, 224, 224)).score.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.vcg.noise_embed.grad is not None


def test_channels_last_keeps_the_unet_in_nchw_and_the_scores():
    model = tiny_model().eval()
    x = torch.rand(2, 4, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        before = model(x).score
        model.to_channels_last()
        after = model(x).score
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    unet_conv = next(m for m in model.diffusion.unet.modules()
                     if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not unet_conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(before, after, atol=1e-5)


def test_fixed_vcg_weights_only_for_a_head_that_ignores_the_image():
    model = tiny_model()
    assert model.fixed_vcg_weights() is None  # a fresh weight head reads its input
    g = model.cfg.vcg.grid
    last = model.vcg.head.weight[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(30.0)  # sigmoid saturates: every patch weighs 1
    assert torch.equal(model.fixed_vcg_weights(), torch.ones(g, g))
    model.vcg.head.weight = FixedPattern(g * g)
    model.train()
    fixed = model.fixed_vcg_weights()
    assert fixed.shape == (g, g) and fixed.sum() == len(range(0, g * g, 3))
    assert model.training  # the probe restores the mode it found
