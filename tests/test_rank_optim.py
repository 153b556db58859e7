import pytest
import torch

from iqa.rank_optim import prepare, rate_factor, set_rates, stages
from iqa.train_rank import RankConfig

from helpers import tiny_model


def test_prepare_trains_later_stages_and_heads_only():
    model = tiny_model()
    groups = prepare(model, RankConfig(free_from_block=3))
    assert {g["name"] for g in groups} == {"heads", "backbone"}
    net = model.backbone.model
    assert all(p.requires_grad for p in stages(net)[3].parameters() if p.ndim > 1)  # convolutions
    assert not any(p.requires_grad for p in stages(net)[0].parameters())
    assert not any(p.requires_grad for p in model.diffusion.parameters())


def test_the_patch_score_mlp_can_have_its_own_rate():
    model = tiny_model()
    groups = prepare(model, RankConfig(free_from_block=3, lr_heads=1e-4, lr_patch_head=1e-2))
    by_name = {g["name"]: g for g in groups}
    own = list(model.vcg.head.score.parameters())
    assert by_name["patch-head"]["lr"] == 1e-2 and len(by_name["patch-head"]["params"]) == len(own)
    assert not {id(p) for p in own} & {id(p) for p in by_name["heads"]["params"]}  # each parameter in one group
    groups = prepare(tiny_model(), RankConfig(free_from_block=3))
    assert {g["name"] for g in groups} == {"heads", "backbone"}  # 0: one rate


def test_rates_warm_up_to_each_group_own_rate_then_follow_the_cosine():
    groups = prepare(tiny_model(), RankConfig(free_from_block=3, lr_heads=1e-3, lr_backbone=1e-4))
    opt = torch.optim.AdamW(groups)
    set_rates(opt, rate_factor(1, warmup_steps=4))
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx({"heads": 2.5e-4, "backbone": 2.5e-5})
    set_rates(opt, rate_factor(9, warmup_steps=4))
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx({"heads": 1e-3, "backbone": 1e-4})
    # a state saved before base_lr existed
    old = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1}])
    set_rates(old, rate_factor(1, warmup_steps=4))
    assert old.param_groups[0]["lr"] == pytest.approx(0.025)


def test_the_cosine_falls_from_the_warm_up_end_to_the_floor_and_stays():
    f = [rate_factor(s, warmup_steps=10, decay_steps=110, floor=0.1) for s in range(1, 131)]
    assert f[9] == pytest.approx(1.0)  # step 10: warm-up done, decay not begun
    assert f[59] == pytest.approx(0.1 + 0.9 * 0.5)  # step 60: half way down
    assert f[109] == pytest.approx(0.1) and f[129] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # never rises after the warm-up
    assert [rate_factor(s) for s in (1, 500)] == [1.0, 1.0]  # neither: constant
