import dataclasses

import pytest

from iqa.config import PRESETS, ModelConfig, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_json_round_trip(name):
    cfg = preset(name)
    back = ModelConfig.from_json(cfg.to_json())
    assert back == cfg
    assert isinstance(back.diffusion.unet.channel_mults, tuple)


def test_paper_preset_matches_design():
    cfg = preset("paper")
    assert cfg.vcg.backbone.name == "vit_base_patch8_224" and cfg.vcg.backbone.indices == (6, 7, 8, 9)
    assert cfg.vda.backbone.name == "resnet50"
    u = cfg.diffusion.unet
    assert (u.inner_channel, u.channel_mults, u.res_blocks, u.dropout, u.norm) == (64, (1, 2, 4, 8, 8), 2, 0.2, "batch")
    assert (cfg.diffusion.schedule, cfg.diffusion.sample_steps, cfg.diffusion.keep_steps) == ("cosine", 50, (5, 10))
    assert cfg.vda_weight == 1.0 and cfg.vcg.noise_embed_dim == 192


def test_unknown_keys_and_presets_are_rejected():
    d = preset("lite").to_dict()
    d["vcg"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict(d)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")


def test_presets_are_independent_instances():
    a, b = preset("lite"), preset("lite")
    a.vcg.grid = 99
    assert b.vcg.grid == preset("lite").vcg.grid != 99 and dataclasses.is_dataclass(a)


def test_ablation_presets():
    ablation = preset("lite:no-diffusion")
    assert ablation.use_diffusion is False and ablation.name == "lite:no-diffusion"
    assert preset("lite:vcg-only").use_vda is False and preset("lite:vda-only").use_vcg is False
    assert preset("lite:full") == preset("lite")
    with pytest.raises(ValueError, match="ablation"):
        preset("lite:nope")


def test_lite_diffuses_residual_paper_keeps_eps():
    lite, paper = preset("lite").diffusion, preset("paper").diffusion
    assert (lite.target, lite.predict, lite.unet.norm) == ("residual", "x0", "group")
    assert (paper.target, paper.predict, paper.unet.norm) == ("image", "eps", "batch")
    assert ModelConfig.from_dict(preset("lite").to_dict()).diffusion == lite
