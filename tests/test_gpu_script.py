"""scripts/train_default_gpu.sh end to end on the CPU with tiny settings: train, levels test, bundle."""
import json
import os
import subprocess
import sys
from pathlib import Path

from iqa.checkpoint import read_metadata, save_checkpoint

from helpers import tiny_model
from test_stream import _photos

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_default_gpu.sh"


def test_gpu_script_trains_tests_and_bundles(tmp_path):
    photos = _photos(tmp_path / "photos", 10)
    save_checkpoint(tiny_model(), tmp_path / "init", {"trained": False})
    env = {**os.environ, "PY": sys.executable, "PHOTOS": str(photos), "COPY": str(tmp_path / "copy"),
           "INIT": str(tmp_path / "init"), "OUT": str(tmp_path / "out"), "DEVICE": "cpu", "STEPS": "2",
           "DIFFUSION_IN": "trainer",
           "SERIES": "1", "WORKERS": "1", "KINDS": "blur", "LIMIT": "1", "BUNDLE": str(tmp_path / "bundle"),
           "EXTRA": "--free-from-block 3 --crop 48 --kinds blur noise --kinds-per-series 1 --levels-per-kind 2 "
                    "--buffer 2 --threads 1",
           "PYTHONPATH": str(SCRIPT.parent.parent)}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "copy").iterdir())) == 7  # the training part of 7:1:2 only
    levels = json.loads((tmp_path / "out" / "levels" / "levels.json").read_text())
    assert levels["results"][0]["method"] == "DiffV2IQA lite (train-rank)"
    _, card = read_metadata(tmp_path / "bundle")
    assert card["rank_training"]["steps"] == 2 and card["evaluation"]["levels"]["photos"] == 1
