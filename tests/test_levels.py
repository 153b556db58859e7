import json

import pytest

from iqa.checkpoint import save_checkpoint
from iqa.cli import main as cli_main
from iqa.levels import GATE, Method, ScoreCache, gate, monotone, run_levels, series_result

from helpers import tiny_model
from test_stream import _photos


def test_series_result_reads_the_order_of_the_scores():
    r = series_result("a", "blur", [0.9, 0.8, 0.6, 0.5, 0.3, 0.1])
    assert r.rho == pytest.approx(1) and r.adjacent == 1 and r.clean_above_all and r.clean_above_level1
    r = series_result("a", "blur", [0.7, 0.8, 0.6, 0.5, 0.3, 0.75])
    assert 0 < r.rho < 1 and r.adjacent == pytest.approx(0.6) and not r.clean_above_all
    assert not r.clean_above_level1
    assert series_result("a", "blur", [0.5] * 6).rho == 0


def test_monotone_kinds_are_those_that_fall_on_every_photo():
    rs = [series_result("a", "jpeg", [1, .9, .8, .7, .6, .5]), series_result("b", "jpeg", [1, .9, .8, .7, .6, .4]),
          series_result("a", "brighten", [1, .9, .8, .7, .6, .5]),
          series_result("b", "brighten", [1, .9, .95, .7, .6, .5]),
          series_result("a", "blur", [1, .9, .8, .7, .6, .5])]  # plain kinds are never KADID-monotone
    assert monotone(rs) == ["jpeg"]


def _contrast_method(calls):
    def score(a):
        calls.append(1)
        return float(a.std())
    return Method("std", "std", score)


def test_a_score_that_tracks_the_distortion_passes_and_the_cache_resumes(tmp_path):
    photos = sorted(_photos(tmp_path / "photos", 2).glob("*.png"))
    calls = []
    cache = tmp_path / "scores.jsonl"
    rep = run_levels(photos, ["contrast"], [_contrast_method(calls)], cache=ScoreCache(cache), labels=False)
    m = rep.methods[0]
    assert len(calls) == 12 and m.series == 2 and m.rho == pytest.approx(1) and m.per_kind == {"contrast": m.rho}
    assert m.adjacent == 1 and m.clean_above_all == 1
    calls.clear()
    rep2 = run_levels(photos, ["contrast"], [_contrast_method(calls)], cache=ScoreCache(cache), labels=False)
    assert calls == [] and rep2.methods[0].rho == m.rho
    g = gate(m)
    assert not g["plain_each"] and not g["kadid_monotone_mean"] and g["adjacent"]  # one kind only: not a pass


def test_a_constant_score_fails_every_check(tmp_path):
    photos = sorted(_photos(tmp_path / "photos", 1).glob("*.png"))
    rep = run_levels(photos, ["blur", "noise"], [Method("flat", "flat", lambda a: 0.5)], labels=True)
    assert rep.methods[0].rho == 0 and rep.methods[0].clean_above_level1 == 0
    assert rep.labels.rho == pytest.approx(1)  # the full-reference label falls with every level
    assert not any(gate(rep.methods[0]).values()) and set(GATE) == set(gate(rep.methods[0]))


def test_cli_writes_tables_and_refuses_unknown_kinds(tmp_path, capsys):
    photos = _photos(tmp_path / "photos", 5)
    save_checkpoint(tiny_model(), tmp_path / "ck", {"trained": False})
    out = tmp_path / "out"
    args = ["levels", "--photos", str(photos), "--ratios", "3:1:1", "--kinds", "blur", "--no-labels",
            "--checkpoint", f"tiny={tmp_path / 'ck'}", "--crops", "1", "--out", str(out)]
    assert cli_main(args) == 0
    data = json.loads((out / "levels.json").read_text())
    assert [r["method"] for r in data["results"]] == ["tiny", "BRISQUE", "NIQE"]
    assert data["results"][1]["per_kind"]["blur"] > 0.5  # BRISQUE sees blur
    assert "| tiny |" in (out / "levels.md").read_text()
    keys = {json.loads(line)["key"] for line in (out / "scores.jsonl").read_text().splitlines()}
    assert any(":noise-field:region:bf16-" in k for k in keys)  # the pipeline keys the cache
    assert cli_main(args + ["--out", str(tmp_path / "crops"), "--diffusion-on", "crops", "--bf16", "vcg"]) == 0
    keys = {json.loads(line)["key"] for line in (tmp_path / "crops" / "scores.jsonl").read_text().splitlines()}
    assert any(":noise-field:crops:bf16-vcg:fusion1,1" in k for k in keys)  # tiny: S = S1 + S2
    assert cli_main(args[:5] + ["--kinds", "blurr"] + args[7:]) == 2
    assert "blurr" in capsys.readouterr().err


def test_the_noise_seed_is_part_of_a_checkpoints_cache_key(tmp_path):
    from iqa.levels import checkpoint_method
    save_checkpoint(tiny_model(), tmp_path / "m", {"trained": False})
    keys = [checkpoint_method("m", str(tmp_path / "m"), crops=1, device="cpu", noise_seed=s).key for s in (0, 1, 2)]
    assert len(set(keys)) == 3  # a cached score is never reused for another noise seed
    assert "noise-seed" not in keys[0]  # seed 0 keeps the keys of runs made before the option existed
