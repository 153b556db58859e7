import json

import numpy as np
import pytest
from PIL import Image

from iqa.checkpoint import load_checkpoint
from iqa.cli import main as cli_main
from iqa.train_diffusion import DiffusionTrainOptions, PairBank, pair_records, train_diffusion

def _opts(data, out, steps):
    return DiffusionTrainOptions(data=str(data), preset="tiny", out=str(out), steps=steps, batch=4, crop=32,
                                 lr=1e-3, save_every=2, sample_every=2, val_pairs=2, ema=0.9)


def test_pairs_are_content_disjoint_and_batches_align(pairs_dir):
    train, held = pair_records(_opts(pairs_dir, "unused", 1))
    assert train and held and not {r.group for r in train} & {r.group for r in held}
    d, r = PairBank(train).batch(5, 32, np.random.default_rng(0))
    assert d.shape == r.shape == (5, 3, 32, 32) and d.min() >= -1 and d.max() <= 1


def test_train_writes_checkpoint_samples_and_resumes(pairs_dir, tmp_path, capsys):
    out = tmp_path / "run"
    q = train_diffusion(_opts(pairs_dir, out, 4))
    assert np.isfinite([q.psnr_distorted, q.psnr_restored, q.ssim_restored]).all() and q.pairs >= 1
    model, card = load_checkpoint(out / "last")
    assert model.diffusion is not None and card["diffusion_steps"] == 4
    assert (out / "samples" / "final.png").is_file() and (out / "state.pt").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [2, 4]
    # The same command with more steps resumes from step 4 instead of starting over.
    assert cli_main(["train-diffusion", "--data", str(pairs_dir), "--preset", "tiny", "--out", str(out),
                     "--steps", "6", "--batch", "4", "--crop", "32", "--save-every", "2", "--sample-every", "2",
                     "--val-pairs", "2", "--ema", "0.9"]) == 0
    assert "resuming" in capsys.readouterr().err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6]


def test_dataset_without_references_is_refused(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    (tmp_path / "meta.csv").write_text("image,mos\na.png,0.5\nb.png,0.4\n")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "b.png")
    with pytest.raises(SystemExit, match="no \\(distorted, reference\\) pairs"):
        pair_records(_opts(tmp_path, tmp_path / "o", 1))


def test_every_zero_means_at_the_end_only(pairs_dir, tmp_path):
    out = tmp_path / "end"
    opts = _opts(pairs_dir, out, 3)
    opts.save_every = opts.sample_every = 0
    train_diffusion(opts)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 3]  # one loss line, one held-out PSNR line
    assert "psnr_restored" in log[1] and (out / "samples" / "step000003.png").is_file()


@pytest.mark.parametrize("flag, value, message", [
    ("--steps", "0", "--steps must be at least 1"), ("--val-pairs", "0", "--val-pairs must be at least 1"),
    ("--sample-every", "-1", "--sample-every must be >= 0"), ("--ema", "1", "--ema must be in"),
])
def test_bad_options_are_named(pairs_dir, tmp_path, capsys, flag, value, message):
    code = cli_main(["train-diffusion", "--data", str(pairs_dir), "--preset", "tiny", "--out", str(tmp_path / "o"),
                     flag, value])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_kinds_keep_only_those_pairs(pairs_dir, tmp_path):
    opts = _opts(pairs_dir, tmp_path / "o", 1)
    opts.kinds = ("noise",)
    train, held = pair_records(opts)
    assert train and held and all(r.image.name.endswith("_2.png") for r in train + held)


def test_unknown_kind_is_refused_naming_those_present(pairs_dir, tmp_path, capsys):
    code = cli_main(["train-diffusion", "--data", str(pairs_dir), "--preset", "tiny", "--out", str(tmp_path / "o"),
                     "--kinds", "noise,jpeg"])
    err = capsys.readouterr().err
    assert code == 2 and "no pairs of kind jpeg" in err and "kinds present: blur, noise" in err
    assert not (tmp_path / "o").exists()


def test_kinds_need_a_dataset_that_labels_them(pairs_dir, tmp_path):
    (tmp_path / "meta.csv").write_text("\n".join(",".join(row.split(",")[:-1])
                                                for row in (pairs_dir / "meta.csv").read_text().splitlines()))
    opts = _opts(pairs_dir, tmp_path / "o", 1)
    opts.csv, opts.kinds = str(tmp_path / "meta.csv"), ("noise",)
    with pytest.raises(ValueError, match="does not label the distortion kind"):
        pair_records(opts)


def test_paper_preset_trains_with_the_papers_settings():
    from iqa.train_diffusion import PAPER_TRAINING, training_defaults
    paper = {"batch": 256, "crop": 64, "lr": 1e-5, "lr_schedule": "constant"}
    assert training_defaults("paper") == PAPER_TRAINING == paper
    assert training_defaults("lite")["lr_schedule"] == "cosine"
    assert training_defaults("paper:no-diffusion")["batch"] == 256
