import json

import numpy as np
import pytest
from PIL import Image

from iqa.assess import Assessor
from iqa.levels import Method, ScoreCache
from iqa.partial import GRID, _crops, damage_cell, run_partial, summarise

from helpers import photo, tiny_model


def test_damage_cell_touches_only_its_cell():
    img = photo(90, 60)
    out = damage_cell(img, "blur+noise", 1, 2)
    changed = np.any(out != img, axis=2)
    rows, cols = np.nonzero(changed)
    assert rows.min() >= 20 and rows.max() < 40 and cols.min() >= 60
    assert changed[20:40, 60:].mean() > 0.5
    with pytest.raises(ValueError, match="unknown damage"):
        damage_cell(img, "fog", 0, 0)


def test_summary_counts_cases_per_cell_and_damage(tmp_path):
    img = photo(96, 72)
    Image.fromarray(img).save(tmp_path / "p.png")
    reference = Method("full reference", "fr", lambda a: -float(np.abs(a.astype(float) - img).mean()))
    constant = Method("constant", "c", lambda a: 0.5)  # a tie is not "above"
    cases = run_partial([tmp_path / "p.png"], [reference, constant])
    assert len(cases) == 2 * GRID * GRID * 2
    s = {m.method: m for m in summarise(cases)}
    assert s["full reference"].clean_above == 1.0 and s["full reference"].mean_drop > 0
    assert s["constant"].clean_above == 0.0 and s["constant"].mean_drop == 0.0
    assert s["full reference"].clean_above_by_cell == [[1.0] * GRID] * GRID
    assert set(s["constant"].clean_above_by_damage.values()) == {0.0}
    json.dumps([vars(m) for m in s.values()])


def test_run_partial_on_a_tiny_model_and_a_bad_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("iqa.partial.GRID", 1)  # the whole photo is the one cell: 2 cases
    Image.fromarray(photo(224, 224)).save(tmp_path / "p.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    a = Assessor(tiny_model(), device="cpu")
    m = Method("tiny", "tiny", lambda x: a.assess(x, crops=0).score)
    cases = run_partial([tmp_path / "bad.png", tmp_path / "p.png"], [m])
    assert len(cases) == 2 and {c.photo for c in cases} == {"p"}
    assert "skipped" in capsys.readouterr().err


def test_crops_spec():
    assert _crops("3,0") == [3, 0]
    for bad in ("", "x", "-1"):
        with pytest.raises(ValueError, match="--crops"):
            _crops(bad)


def test_a_stopped_run_resumes_from_its_scores(tmp_path):
    img = photo(96, 72)
    Image.fromarray(img).save(tmp_path / "p.png")
    calls = []

    def reference(a):
        calls.append(1)
        return -float(np.abs(a.astype(float) - img).mean())
    cache = tmp_path / "scores.jsonl"
    first = run_partial([tmp_path / "p.png"], [Method("fr", "fr", reference)], ScoreCache(cache))
    assert len(calls) == 1 + 2 * GRID * GRID
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:5]) + "\n" + lines[5][:7])  # killed while writing line 6
    calls.clear()
    again = run_partial([tmp_path / "p.png"], [Method("fr", "fr", reference)], ScoreCache(cache))
    assert len(calls) == 1 + 2 * GRID * GRID - 5 and again == first
    calls.clear()  # the cut line was dropped, not glued to the next one: a third run computes nothing
    assert run_partial([tmp_path / "p.png"], [Method("fr", "fr", reference)], ScoreCache(cache)) == first
    assert not calls
