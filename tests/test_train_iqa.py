import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from safetensors.torch import load_file

from iqa.assess import Assessor
from iqa.cache import DiffusionCache
from iqa.checkpoint import load_checkpoint, save_checkpoint
from iqa.cli import main as cli_main
from iqa.data.datasets import load_dataset
from iqa.data.splits import load_splits, make_splits, save_splits
from iqa.train_iqa import STATE, TrainError, TrainOptions, build_optimizer, prepare_model, quality_loss, train
from iqa.train_iqa_data import Scorer, predict
from tests.test_cache import micro_model

REPO = Path(__file__).resolve().parent.parent
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
LEVELS = 3
SIZE = (80, 72)  # (w, h): two distinct 64 px crop windows
CROPS = 2
SUBPROCESS_TIMEOUT_S = 240


def _make_dataset(root: Path) -> None:
    """12 images in the generic layout: 4 photos x 3 levels of blur + noise, MOS falling with the level."""
    import skimage.data

    rng = np.random.default_rng(0)
    rows = []
    for p, name in enumerate(PHOTOS):
        base = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(SIZE, Image.Resampling.BICUBIC)
        for level in range(LEVELS):
            img = np.asarray(base.filter(ImageFilter.GaussianBlur(1.5 * level)), dtype=np.float64)
            img = np.clip(img + rng.normal(0, 10 * level, img.shape), 0, 255).astype(np.uint8)
            rel = f"images/{name}_{level}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / rel)
            rows.append({"image": rel, "mos": round(90 - 30 * level + 2 * p, 2), "group": name})
    with (root / "meta.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "mos", "group"])
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Dataset, split files (2:1:1 with a val part, 8:2 without), an init and a diffusion checkpoint."""
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    _make_dataset(data)
    dataset = load_dataset(data, "generic")
    save_splits(make_splits(dataset, "2:1:1", count=1, seed=0), root / "val_split.json")
    save_splits(make_splits(dataset, "8:2", count=2, seed=0), root / "splits.json")
    save_checkpoint(micro_model(0), root / "init")
    save_checkpoint(micro_model(1), root / "diffusion",  # stands in for a train-diffusion checkpoint
                    {"stage": "diffusion network trained; quality heads untrained", "diffusion_steps": 5})
    return root


def _args(env: Path, out: Path, *extra: str) -> list[str]:
    """CLI arguments shared by the runs; they share one diffusion cache (same images and network)."""
    return ["train", "--data", str(env / "data"), "--format", "generic", "--init", str(env / "init"),
            "--diffusion", str(env / "diffusion"), "--cache", str(env / "cache"), "--batch", "3",
            "--crops", str(CROPS), "--workers", "0", "--device", "cpu", "--out", str(out), *extra]


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def resumed_run(env):
    """`python -m iqa train` killed (SIGKILL) after its first state save, then re-run to the end."""
    out = env / "run"
    args = ["-m", "iqa", *_args(env, out, "--split-file", str(env / "val_split.json"), "--epochs", "2",
                                 "--save-every", "1")]
    first = _run_cli(args)
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while not (out / STATE).is_file():
        assert first.poll() is None, f"training ended before its first state save:\n{first.stdout.read()}"
        assert time.monotonic() < deadline, "no state.pt written in time"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    state = torch.load(out / STATE, map_location="cpu", weights_only=True)
    saved = (int(state["epoch"]), int(state["step"]))
    assert not (out / "metrics.json").exists() and not state["finished"]
    second = _run_cli(args)
    stdout, _ = second.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert second.returncode == 0, stdout
    return out, saved, stdout


def test_loss_falls_on_fixed_batch():
    model = prepare_model(micro_model(), freeze_backbones=False).train()
    diffusion_before = {k: v.clone() for k, v in model.diffusion.state_dict().items()}
    scorer = Scorer(model)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (2, 4, 3, 64, 64), generator=gen, dtype=torch.uint8)
    mos = torch.tensor([0.2, 0.9])
    opt = build_optimizer(model, lr=1e-3, weight_decay=0)
    losses = []
    for _ in range(8):
        loss = quality_loss(scorer(batch), mos)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
    assert all(torch.equal(v, model.diffusion.state_dict()[k]) for k, v in diffusion_before.items())


def test_resume_continues_after_kill(resumed_run):
    out, (epoch, step), stdout = resumed_run
    assert f"resuming from epoch {epoch}, step {step}" in stdout
    epochs = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]
    assert [r["epoch"] for r in epochs] == [1, 2]  # nothing repeated, nothing missing
    if step:  # 6 training images, batch 3: 2 steps per epoch
        assert epochs[epoch]["resumed_at_step"] == step and epochs[epoch]["steps"] == 2 - step
    state = torch.load(out / STATE, map_location="cpu", weights_only=True)
    assert state["finished"] and state["epoch"] == 2


def test_cli_run_writes_log_checkpoints_metrics(resumed_run, env):
    out, _, stdout = resumed_run
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for r in records:
        assert {"epoch", "loss", "val_srcc", "val_plcc", "lr", "images_per_s", "seconds"} <= set(r)
        assert np.isfinite(r["loss"]) and r["images_per_s"] > 0
    assert records[0]["lr"] > records[-1]["lr"]  # cosine annealing
    for name in ("best", "last"):
        assert {"model.safetensors", "config.json", "card.json"} <= {p.name for p in (out / name).iterdir()}
    card = json.loads((out / "best" / "card.json").read_text())
    assert card["training"]["split_index"] == 0 and card["training"]["images"] == {"train": 6, "val": 3, "test": 3}
    assert card["selection"].startswith("best epoch by validation") and "iqa train" in card["command"]
    assert 1 <= card["best_epoch"] <= 2 and "test" in card["metrics"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selection"] == "val_srcc" and len(metrics["predictions"]) == 3 and "srcc" in metrics["test"]
    assert "test (3 images" in stdout
    # the diffusion network's training is recorded, not its own checkpoint's "heads untrained" stage
    assert card["diffusion_training"]["diffusion_steps"] == 5 and "stage" not in card["diffusion_training"]
    # --diffusion: its network is used as is (not trained); the heads did train.
    best, diff, init = (load_file(str(env / p / "model.safetensors")) for p in (out / "best", "diffusion", "init"))
    assert all(torch.equal(v, best[k]) for k, v in diff.items() if k.startswith("diffusion."))
    assert any(not torch.equal(v, best[k]) for k, v in init.items() if k.startswith("vcg."))


def test_reload_gives_identical_predictions(resumed_run, env):
    out, _, _ = resumed_run
    model, card = load_checkpoint(out / "best")
    splits = load_splits(env / "val_split.json", dataset=load_dataset(env / "data", "generic"))
    test = splits.part(0, "test")
    assessor = Assessor(model, device="cpu")
    cache = DiffusionCache(env / "cache" / "diffusion", assessor, CROPS)
    assert all(cache.lookup(r.image) is not None for r in test)  # the run's cache is reused as is
    pred = predict(Scorer(model), test, cache, None, torch.device("cpu"))
    stored = [p["pred"] for p in json.loads((out / "metrics.json").read_text())["predictions"]]
    np.testing.assert_allclose(pred, stored, rtol=1e-5, atol=1e-6)
    # The app's path (float states, no uint8 cache) agrees up to the states' 8-bit rounding, which moves
    # this barely trained tiny model's scores by up to ~0.05 depending on the noise drawn for y1, y2.
    scores = [assessor.assess(str(r.image), crops=CROPS).score for r in test]
    np.testing.assert_allclose(scores, stored, atol=0.08 * max(1.0, np.ptp(stored)))


def test_freeze_backbones_caches_features_and_runs_splits(env):
    out = env / "frozen"
    opts = TrainOptions(data=env / "data", format="generic", split_file=env / "splits.json", init=env / "init",
                        diffusion=env / "diffusion", cache=env / "cache", splits=2, epochs=2, batch=8, crops=CROPS,
                        freeze_backbones=True, out=out, workers=0, device="cpu", progress=False)
    result = train(opts)
    files = list((env / "cache" / "features").rglob("*.npy"))
    assert len(files) == 12  # every image once, shared by both splits
    assert [s.selection for s in result.splits] == ["last_epoch"] * 2 and result.summary is not None
    results = json.loads((out / "results.json").read_text())
    assert len(results["splits"]) == 2 and {"median", "mean", "std"} <= set(results["summary"]["srcc"])
    best = load_file(str(out / "split_01" / "best" / "model.safetensors"))
    init = load_file(str(env / "init" / "model.safetensors"))
    assert all(torch.equal(v, best[k]) for k, v in init.items() if k.startswith("backbone."))  # frozen
    assert any(not torch.equal(v, best[k]) for k, v in init.items() if k.startswith("vcg."))
    assert json.loads((out / "split_00" / "best" / "card.json").read_text())["freeze_backbones"] is True
    written = [f.stat().st_mtime_ns for f in [*files, out / "split_01" / "metrics.json"]]
    again = train(opts)  # finished: nothing is recomputed or rewritten
    assert [f.stat().st_mtime_ns for f in [*files, out / "split_01" / "metrics.json"]] == written
    assert again.splits[1].test.rmse == result.splits[1].test.rmse


def test_gloo_two_processes(env):
    out = env / "ddp"
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "iqa",
            *_args(env, out, "--split-file", str(env / "splits.json"), "--epochs", "1")]
    proc = _run_cli(args)
    stdout, _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, stdout
    model, card = load_checkpoint(out / "best")
    assert card["optimizer"]["processes"] == 2 and card["selection"].startswith("last epoch")
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # only rank 0 logs
    with torch.no_grad():
        score = model(torch.zeros(1, 4, 3, 64, 64)).score
    assert torch.isfinite(score).all()


def test_clear_errors(env, tmp_path, capsys):
    with pytest.raises(TrainError, match="split file .* not found"):
        train(TrainOptions(data=env / "data", format="generic", split_file=tmp_path / "nope.json"))
    code = cli_main(_args(env, tmp_path / "r", "--split-file", str(env / "splits.json"), "--split-index", "5"))
    assert code == 2 and "holds 2 split(s)" in capsys.readouterr().err
