import json

import numpy as np
import pytest

from iqa.assess import Assessor
from iqa.localise import auc, cell_sides, damage, run_localise, summarise
from iqa.results import PatchMaps

from helpers import photo, tiny_model


def test_damage_touches_only_the_named_half():
    img = photo(100, 60)
    for kind in ("blur+noise", "jpeg8"):
        right = damage(img, kind, "right")
        assert np.array_equal(right[:, :50], img[:, :50]) and not np.array_equal(right[:, 50:], img[:, 50:])
        left = damage(img, kind, "left")
        assert np.array_equal(left[:, 50:], img[:, 50:]) and not np.array_equal(left[:, :50], img[:, :50])
    with pytest.raises(ValueError, match="unknown damage"):
        damage(img, "fog", "left")


def test_auc_and_sides():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5
    xs = np.arange(4) * 10
    boxes = np.stack(np.broadcast_arrays(xs[None, :], 0, xs[None, :] + 10, 10), -1).astype(int)  # (1, 4, 4)
    maps = PatchMaps(score=np.array([[1.0, np.nan, 0.2, 0.1]]), weight=np.ones((1, 4)), boxes=boxes)
    bad, good = cell_sides(maps, 40, "right")
    assert bad.tolist() == [[False, False, True, True]] and good.tolist() == [[True, False, False, False]]


def test_run_localise_on_a_tiny_model(tmp_path):
    from PIL import Image
    for i in range(2):
        Image.fromarray(np.roll(photo(256, 240), 40 * i, axis=1)).save(tmp_path / f"p{i}.png")
    cases = run_localise(sorted(tmp_path.glob("*.png")), Assessor(tiny_model(), device="cpu"), "tiny", crops=2)
    assert len(cases) == 2 * 2 * 2 * 2  # photos x damages x sides x (model, baseline)
    s = {m.method: m for m in summarise(cases)}
    assert set(s) == {"tiny", "local BRISQUE"} and all(0 <= m.auc <= 1 for m in s.values())
    json.dumps([vars(m) for m in s.values()])


def test_write_results_writes_the_table_and_the_numbers(tmp_path, capsys):
    from iqa.localise import write_results
    write_results(tmp_path / "out", "demo", "| a |\n", {"x": 1.5})
    assert (tmp_path / "out" / "demo.md").read_text() == "| a |\n" and "| a |" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "demo.json").read_text()) == {"x": 1.5}
