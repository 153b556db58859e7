import json

import pytest
import torch
import torch.nn.functional as F

from iqa.checkpoint import load_checkpoint, save_checkpoint
from iqa.cli import main as cli_main
from iqa.data.stream import CLEAN, Batch
from iqa.revive import REVIVE_START
from iqa.train_rank import RankConfig, RankError, rank_loss, train

from helpers import tiny_model
from test_stream import _photos


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank")
    save_checkpoint(tiny_model(), root / "init", {"trained": False})
    return _photos(root / "photos"), root / "init"


def _args(photos, init, out, steps, *extra):
    return ["train-rank", "--photos", str(photos), "--init", str(init), "--out", str(out), "--steps", str(steps),
            "--series-per-batch", "2", "--kinds-per-series", "1", "--levels-per-kind", "2", "--crop", "48",
            "--kinds", "blur", "noise", "--ratios", "3:1:1", "--buffer", "2", "--free-from-block", "3",
            "--save-every-min", "0", *extra]


def test_rank_loss_is_zero_only_when_every_pair_is_ordered_by_the_margin():
    b = Batch(states=torch.zeros(3, 1, 3, 4, 4, dtype=torch.uint8), series=torch.zeros(3, dtype=torch.long),
              kind=torch.tensor([CLEAN, 0, 0]), level=torch.tensor([0, 1, 2]), mos=torch.zeros(3),
              local=torch.zeros(3, 1, 1))
    loss, acc = rank_loss(torch.tensor([0.9, 0.5, 0.1]), b, margin=0.05)
    assert loss == 0 and acc == 1
    loss, acc = rank_loss(torch.tensor([0.5, 0.52, 0.1]), b, margin=0.05)
    assert loss > 0 and acc == pytest.approx(2 / 3)


def test_clean_weight_scales_only_the_clean_pairs():
    b = Batch(states=torch.zeros(3, 1, 3, 4, 4, dtype=torch.uint8), series=torch.zeros(3, dtype=torch.long),
              kind=torch.tensor([CLEAN, 0, 0]), level=torch.tensor([0, 1, 2]), mos=torch.zeros(3),
              local=torch.zeros(3, 1, 1))
    # pairs (clean, 1), (clean, 2), (1, 2); only (clean, 1) is inside the margin: hinge 0.05 - 0.02 = 0.03
    scores = torch.tensor([0.52, 0.5, 0.1])
    plain, _ = rank_loss(scores, b, margin=0.05)
    heavy, _ = rank_loss(scores, b, margin=0.05, clean_weight=3.0)
    assert plain.item() == pytest.approx(0.03 / 3)
    assert heavy.item() == pytest.approx(3 * 0.03 / 7)  # weights 3, 3, 1
    inside = torch.tensor([0.9, 0.5, 0.48])  # only the within-kind pair (1, 2) violates: down-weighted share
    assert rank_loss(inside, b, 0.05, clean_weight=3.0)[0].item() == pytest.approx(0.03 / 7)


def test_bad_weights_and_schedules_are_refused_before_anything_loads(tmp_path):
    with pytest.raises(RankError, match="clean-weight"):
        train(RankConfig(init=str(tmp_path / "missing"), clean_weight=0.0), tmp_path / "out")
    with pytest.raises(RankError, match="decay must end after the warm-up"):
        train(RankConfig(init=str(tmp_path / "missing"), warmup_steps=20, decay_steps=10), tmp_path / "out")
    with pytest.raises(RankError, match="floor from 0 to 1"):
        train(RankConfig(init=str(tmp_path / "missing"), decay_steps=10, lr_floor=2.0), tmp_path / "out")


def test_a_stream_option_out_of_range_is_an_error_message_not_a_traceback(tmp_path, capsys):
    assert cli_main(_args(tmp_path, tmp_path / "missing", tmp_path / "out", 1, "--gamma", "0", "1")) == 2
    assert "gamma (0.0, 1.0) must be 0 < low" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_writes_checkpoint_resumes_and_keeps_frozen_parts(setup, tmp_path, capsys):
    import shutil
    photos, shared_init = setup
    init = shutil.copytree(shared_init, tmp_path / "init")
    out = tmp_path / "run"
    assert cli_main(_args(photos, init, out, 2)) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and log[-1]["images"] == 12 and log[-1]["images_per_s"] > 0
    trained, card = load_checkpoint(out / "last")
    assert card["rank_training"]["steps"] == 2 and card["stage"] == "train-rank"
    before = load_checkpoint(init)[0].state_dict()
    after = trained.state_dict()
    frozen = [k for k in before if k.startswith("backbone.model.layer1.") and before[k].is_floating_point()]
    # (timm zero-initialises each block's last BatchNorm scale, so in a random network only the
    # shortcut convolutions of layer4 get gradients)
    free = [k for k in before if k.startswith("backbone.model.layer4.") and k.endswith("weight")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert free and not all(torch.equal(before[k], after[k]) for k in free)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vcg."))

    # the init folder rewritten after the start (e.g. this run bundled over it)
    save_checkpoint(tiny_model(seed=1), init, {"trained": True, "training": "rewritten"})
    assert cli_main(_args(photos, init, out, 3)) == 0  # the same command, more steps: resumes
    assert "steps 2 -> 3" in capsys.readouterr().out
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == 3
    assert load_checkpoint(out / "last")[1]["init_training"] is None  # the card of the run's start is kept

    assert cli_main(_args(photos, init, out, 4, "--loss", "rank")) == 2
    assert "other settings (loss)" in capsys.readouterr().err


def test_no_diffusion_ablation_and_bad_stage_are_named(setup, tmp_path, capsys):
    photos, init = setup
    assert cli_main(_args(photos, init, tmp_path / "nd", 1, "--no-diffusion", "--loss", "mse")) == 0
    model, card = load_checkpoint(tmp_path / "nd" / "last")
    assert model.diffusion is None and model.cfg.name.endswith(":no-diffusion")
    assert cli_main(_args(photos, init, tmp_path / "bad", 1)[:-4] + ["--free-from-block", "9"]) == 2
    assert "has 4 stages" in capsys.readouterr().err


def test_a_kill_saves_the_state(setup, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    photos, init = setup
    out = tmp_path / "killed"
    args = _args(photos, init, out, 1000)
    args[args.index("--save-every-min") + 1] = "60"
    proc = subprocess.Popen([sys.executable, "-m", "iqa", *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    for line in proc.stdout:
        if line.startswith("step 1/"):  # the first step is logged
            break
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 130 and "state saved" in rest
    assert torch.load(out / "state.pt", weights_only=True)["progress"]
    assert load_checkpoint(out / "last")[1]["rank_training"]["steps"] >= 1


def test_local_loss_trains_the_patch_scores_and_revive_restarts_them():
    from iqa.revive import revive_score_head
    from iqa.train_rank import step_loss
    model = tiny_model()
    g = model.cfg.vcg.grid
    revive_score_head(model)
    model.eval()
    states = torch.randint(0, 256, (3, 4, 3, model.cfg.crop, model.cfg.crop), dtype=torch.uint8)
    with torch.no_grad():
        f = model(states.float() / 127.5 - 1).f1
    assert f.min() > REVIVE_START - 0.05 and f.max() < REVIVE_START + 0.05  # every patch alive, near the start
    assert model.cfg.vcg.score_activation == "sigmoid"
    assert (model.cfg.vcg_weight, model.cfg.vda_weight) == (0.5, 0.5)
    b = Batch(states=states, series=torch.zeros(3, dtype=torch.long), kind=torch.tensor([CLEAN, 0, 0]),
              level=torch.tensor([0, 1, 2]), mos=torch.tensor([1.0, 0.6, 0.3]), local=torch.ones(3, g, g))
    off, stats_off = step_loss(model, b, RankConfig(local_weight=0.0), torch.device("cpu"))
    on, stats_on = step_loss(model, b, RankConfig(local_weight=2.0), torch.device("cpu"))
    assert stats_off.local == 0 and stats_on.local == pytest.approx((1 - REVIVE_START) ** 2, abs=0.03)
    assert on.item() == pytest.approx(off.item() + 2.0 * stats_on.local, rel=1e-4)


def test_the_trainer_can_make_the_diffusion_states_itself():
    import dataclasses

    import numpy as np

    from iqa.data.stream import StreamConfig, add_diffusion_states, make_series
    from iqa.train_rank import step_loss
    from helpers import photo
    model = tiny_model().eval()
    s = make_series(photo(120, 90), StreamConfig(crop=model.cfg.crop, kinds=("blur",), kinds_per_series=1,
                                                 levels_per_kind=2), np.random.default_rng(0))
    x_only = Batch(states=torch.from_numpy(s.states), series=torch.zeros(3, dtype=torch.long),
                   kind=torch.from_numpy(s.kind), level=torch.from_numpy(s.level),
                   mos=torch.from_numpy(s.mos), local=torch.from_numpy(s.local))
    with pytest.raises(RankError, match="x only"):
        step_loss(model, x_only, RankConfig(), torch.device("cpu"))
    cfg = RankConfig(diffusion_in="trainer")
    mine, _ = step_loss(model, x_only, cfg, torch.device("cpu"), torch.Generator().manual_seed(3))
    full = add_diffusion_states(s, model.diffusion, torch.Generator().manual_seed(3))
    theirs, _ = step_loss(model, dataclasses.replace(x_only, states=torch.from_numpy(full.states)), cfg,
                          torch.device("cpu"))
    assert torch.isfinite(mine) and mine.item() == pytest.approx(theirs.item(), rel=1e-4)  # the workers' states


def test_a_revived_model_saves_and_loads_with_its_sigmoid_head(tmp_path):
    from iqa.revive import revive_score_head
    model = tiny_model()
    revive_score_head(model)
    save_checkpoint(model, tmp_path / "m", {"trained": True})
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert loaded.cfg.vcg.score_activation == "sigmoid" and isinstance(loaded.vcg.head.score[-1], torch.nn.Sigmoid)
    assert loaded.cfg.vcg.score_norm and isinstance(loaded.vcg.head.score[0], torch.nn.LayerNorm)
    tokens = torch.randn(1, 5, loaded.vcg.head.score[0].normalized_shape[0])
    loaded.eval(), model.eval()
    assert torch.equal(loaded.vcg.head(tokens)[1], model.vcg.head(tokens)[1])


def test_a_local_skip_saves_loads_and_lets_the_patch_scores_see_each_position(tmp_path):
    """With the skip, a patch score depends on its own cell's backbone maps: changing one cell's features
    changes that cell's score most. Saved and loaded, the model gives the same patch scores."""
    from iqa.revive import revive_score_head
    model = tiny_model()
    revive_score_head(model, local_skip=8)
    torch.nn.init.normal_(model.vcg.head.score[-2].weight, std=0.5)  # as if trained: outputs depend on inputs
    assert {id(p) for p in model.vcg.skip.parameters()} <= {id(p) for p in model.vcg.patch_score_parameters()}
    save_checkpoint(model, tmp_path / "m", {"trained": True})
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert loaded.cfg.vcg.local_skip == 8 and loaded.vcg.skip is not None
    g, c = model.cfg.vcg.grid, sum(model.vcg.state_channels)
    feats = torch.randn(1, c, g, g)
    model.eval(), loaded.eval()
    with torch.no_grad():
        f = model.vcg(feats)[1]
        assert torch.equal(f, loaded.vcg(feats)[1])
        moved = feats.clone()
        moved[:, :, 0, 0] += 5.0
        change = (model.vcg(moved)[1] - f).abs()
    assert change[0, 0, 0] == change.max() and change[0, 0, 0] > 0


@pytest.mark.parametrize("norm", [True, False])
def test_a_revived_head_stays_out_of_saturation_on_large_tokens(norm):
    """The backbone's tokens reach ~1e3; Adam steps on an unnormalised sigmoid head push the patches to
    exactly 0 or 1 (ties: AUC 0.5). The revived head keeps distinct patch scores inside (0, 1); the same
    MLP without its LayerNorm does not (the check can fail)."""
    from iqa.revive import revived_score_mlp
    torch.manual_seed(0)
    dim = 384  # the lite VCG's token width
    mlp = revived_score_mlp(dim, dropout=0.1)
    if not norm:
        mlp = mlp[1:]
    tokens, target = torch.randn(4, 64, dim) * 1000, torch.rand(4, 64) * 0.6 + 0.2
    opt = torch.optim.AdamW(mlp.parameters(), lr=1e-3)
    for _ in range(30):
        loss = F.mse_loss(mlp(tokens).squeeze(-1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    f = mlp.eval()(tokens).squeeze(-1)
    saturated = ((f < 1e-3) | (f > 1 - 1e-3)).float().mean().item()
    if norm:
        assert saturated == 0 and f.unique().numel() == f.numel()
    else:
        assert saturated > 0.5


def test_accumulated_batches_give_the_gradient_of_their_union():
    from iqa.train_rank import step_loss
    model = tiny_model().eval()  # no dropout: the two ways see the same network
    g, c = model.cfg.vcg.grid, model.cfg.crop
    states = torch.randint(0, 256, (6, 4, 3, c, c), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    kind, level = torch.tensor([CLEAN, 0, 0] * 2), torch.tensor([0, 1, 2] * 2)
    mos, local = torch.tensor([1.0, 0.6, 0.3, 0.9, 0.5, 0.2]), torch.rand(6, g, g)

    def batch(rows, series):
        return Batch(states=states[rows], series=series, kind=kind[rows], level=level[rows], mos=mos[rows],
                     local=local[rows])

    cfg, cpu = RankConfig(local_weight=0.5), torch.device("cpu")
    step_loss(model, batch(slice(0, 6), torch.tensor([0, 0, 0, 1, 1, 1])), cfg, cpu)[0].backward()
    whole = [p.grad.clone() for p in model.vda.parameters()]
    assert any(g.abs().sum() > 0 for g in whole)  # a real gradient, not zeros on both sides
    model.zero_grad()
    for rows in (slice(0, 3), slice(3, 6)):
        (step_loss(model, batch(rows, torch.zeros(3, dtype=torch.long)), cfg, cpu)[0] / 2).backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(whole, model.vda.parameters()))


def test_accumulate_counts_every_batch_of_a_step(setup, tmp_path, capsys):
    photos, init = setup
    assert cli_main(_args(photos, init, tmp_path / "acc", 1, "--accumulate", "2")) == 0
    log = [json.loads(x) for x in (tmp_path / "acc" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["images"] == 12  # 2 batches x 2 series x (clean + 2 levels of 1 kind)
    assert cli_main(_args(photos, init, tmp_path / "none", 1, "--accumulate", "0")) == 2
    assert "--accumulate 0" in capsys.readouterr().err


def _trained_params(path, like):
    """The checkpoint's tensors of the names in `like`."""
    state = load_checkpoint(path)[0].state_dict()
    return {k: state[k] for k in like}


def test_ema_checkpoints_hold_the_moving_average_and_resume_it(setup, tmp_path, capsys):
    """A decay near 1 keeps the checkpoint at the init's weights, also across a resume (the average is
    saved in the state, not restarted from the resumed weights); near 0 it follows the weights, which go
    to `last-raw` either way."""
    photos, init = setup
    start = load_checkpoint(init)[0].state_dict()
    slow, fast = tmp_path / "slow", tmp_path / "fast"
    assert cli_main(_args(photos, init, slow, 1, "--ema", "0.999999")) == 0
    assert cli_main(_args(photos, init, slow, 2, "--ema", "0.999999")) == 0  # resumed
    raw = load_checkpoint(slow / "last-raw")[0].state_dict()
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], raw[k])]
    assert moved and load_checkpoint(slow / "last")[1]["rank_training"]["weights"] == "ema"
    avg = _trained_params(slow / "last", moved)
    assert all(torch.allclose(avg[k], start[k], atol=1e-5) for k in moved)
    assert not all(torch.allclose(raw[k], start[k], atol=1e-5) for k in moved)

    assert cli_main(_args(photos, init, fast, 1, "--ema", "1e-9")) == 0
    avg, raw = _trained_params(fast / "last", moved), _trained_params(fast / "last-raw", moved)
    assert all(torch.allclose(avg[k], raw[k], atol=1e-6) for k in moved)
    assert cli_main(_args(photos, init, tmp_path / "bad", 1, "--ema", "1")) == 2
    assert "--ema 1.0: a decay" in capsys.readouterr().err
