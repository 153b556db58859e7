import json

import pytest
from PIL import Image

from iqa.bundle import bundle, is_provisional, provisional_note
from iqa.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from iqa.cli import main as cli_main
from tests.helpers import photo, tiny_model
from ui import model_tab
from ui.settings import model_banner
from ui.state import AppState


def _report(path, srcc: float, passed: list[bool], n: int = 40):
    checks = [{"text": f"check {i}", "passed": p} for i, p in enumerate(passed)]
    methods = [{"name": "DiffV2IQA tiny", "overall": {"srcc": srcc, "plcc": 0.5, "krcc": 0.4, "n": n},
                "monotone_kinds_share": 0.7},
               {"name": "BRISQUE", "overall": {"srcc": 0.1, "n": n}}]
    path.write_text(json.dumps({"methods": methods, "checks": checks, "n_test": n, "n_groups": 2,
                                "command": "python -m iqa report ...", "kind_level_oracle_srcc": 0.8}))
    return path


@pytest.fixture
def run_best(tmp_path):
    return save_checkpoint(tiny_model(), tmp_path / "run" / "best",
                           {"trained": True, "metrics": {"test": {"srcc": 0.55, "n": 40}}})


def test_bundle_failing_checks_is_provisional(run_best, tmp_path, capsys):
    out = tmp_path / "default"
    assert cli_main(["bundle", str(run_best), "--report", str(_report(tmp_path / "r.json", 0.55, [False, True])),
                     "--out", str(out)]) == 0
    assert "PROVISIONAL" in capsys.readouterr().out
    _, card = read_metadata(out)  # the card travels inside the safetensors file, and in card.json
    assert card == json.loads((out / "card.json").read_text())
    assert is_provisional(card) and card["evaluation"]["test"]["srcc"] == 0.55
    assert card["evaluation"]["others"] == {"BRISQUE": 0.1} and "0.55" in provisional_note(card)
    model, _ = load_checkpoint(out)
    assert sum(p.numel() for p in model.parameters()) > 0

    app = AppState.create(out, runs_dir=tmp_path / "runs")
    assert "provisional" in model_banner(app.info(app.default))
    text, _ = model_tab.show(app, app.default)
    assert "provisional model" in text and "Held-out report" in text


def test_bundle_passing_checks_is_plain(run_best, tmp_path):
    card = bundle(run_best, _report(tmp_path / "r.json", 0.55, [True, True]), tmp_path / "default")
    assert card["evaluation"]["passed"] and not is_provisional(card) and provisional_note(card) == ""
    assert not is_provisional({}) and not is_provisional({"evaluation": {"passed": True}})


def test_bundle_refuses_a_report_of_another_model(run_best, tmp_path, capsys):
    bad = _report(tmp_path / "r.json", 0.91, [True, True])  # same 40 test images, other SRCC
    assert cli_main(["bundle", str(run_best), "--report", str(bad), "--out", str(tmp_path / "d")]) == 1
    assert "pass the matching report" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_score_names_a_provisional_model(run_best, tmp_path, capsys):
    out = tmp_path / "default"
    bundle(run_best, _report(tmp_path / "r.json", 0.55, [False]), out)
    img = tmp_path / "x.png"
    Image.fromarray(photo(64, 48)).save(img)
    assert cli_main(["score", str(img), "--checkpoint", str(out), "--crops", "1", "--steps", "2",
                     "--device", "cpu"]) == 0
    assert "provisional model: held-out SRCC 0.55" in capsys.readouterr().err


def _levels(path, digest: str, rho: float, passed: bool):
    row = {"rho": rho, "plain_rho": rho, "kadid_monotone_rho": rho, "adjacent": 0.9, "clean_above_all": 0.5,
           "clean_above_level1": 0.8, "series": 54, "per_kind": {"blur": rho}, "crops": 3}
    gate = dict.fromkeys(("plain_mean", "plain_each", "kadid_monotone_mean", "adjacent", "clean_above_level1"), passed)
    path.write_text(json.dumps({
        "command": "python -m iqa levels ...", "photos": ["a.png", "b.png"], "kinds": ["blur"],
        "monotone_kinds": [], "gate_thresholds": {"plain_mean": 0.95, "plain_each": 0.9, "kadid_monotone_mean": 0.9,
                                                  "adjacent": 0.95, "clean_above_level1": 0.85},
        "results": [{"method": "tiny", "weights": digest, "gate": gate, **row},
                    {"method": "BRISQUE", "weights": "", "gate": gate, **row}]}))
    return path


def test_bundle_with_the_levels_test_carries_it_and_needs_the_crop_report_too(run_best, tmp_path, capsys):
    from iqa.levels import weights_digest
    levels = _levels(tmp_path / "levels.json", weights_digest(run_best), 0.93, True)
    out = tmp_path / "default"
    assert cli_main(["bundle", str(run_best), "--levels", str(levels), "--out", str(out),
                     "--diffusion-on", "crops", "--diffusion-scale", "2", "--full-res-steps", "1"]) == 0
    assert "levels test mean ρ 0.930" in capsys.readouterr().out
    cfg, card = read_metadata(out)
    # where and at which resolution the bundled model's diffusion runs, as asked
    assert (cfg.diffusion.on, cfg.diffusion.unet_scale, cfg.diffusion.full_res_steps) == ("crops", 2, 1)
    lv = card["evaluation"]["levels"]
    assert lv["method"] == "tiny" and lv["photos"] == 2 and set(lv["others"]) == {"BRISQUE"}
    assert is_provisional(card) and "ρ 0.93" in provisional_note(card)  # the crop SRCC is not measured
    card = bundle(run_best, _report(tmp_path / "r.json", 0.55, [True]), out, levels_json=levels)
    assert card["evaluation"]["passed"] and len(card["evaluation"]["checks"]) == 6
    card = bundle(run_best, _report(tmp_path / "r.json", 0.55, [True]), out,
                  levels_json=_levels(tmp_path / "l2.json", weights_digest(run_best), 0.5, False))
    assert is_provisional(card)


def test_bundle_refuses_levels_of_other_weights_and_no_results(run_best, tmp_path, capsys):
    levels = _levels(tmp_path / "levels.json", "0" * 64, 0.9, True)
    assert cli_main(["bundle", str(run_best), "--levels", str(levels), "--out", str(tmp_path / "d")]) == 1
    assert "other weights" in capsys.readouterr().err
    assert cli_main(["bundle", str(run_best), "--out", str(tmp_path / "d")]) == 1
    assert "--levels" in capsys.readouterr().err and not (tmp_path / "d").exists()
