"""Content-disjoint splits: no group crosses parts, ratios hold, seeds are deterministic, JSON round-trips."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa import cli
from iqa.data import splits as splits_module
from iqa.data.datasets import Dataset, DatasetError, load_dataset
from iqa.data.splits import load_splits, make_splits, parse_ratios, part_sizes, save_splits

N_REFS = 20
PER_REF = 4


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)


def make_synthetic(root: Path, n_refs: int = N_REFS, per_ref: int = PER_REF) -> Dataset:
    """A generic dataset of n_refs references x per_ref distorted versions (group = reference)."""
    lines = ["image,mos,ref,level"]
    for r in range(n_refs):
        write_image(root / "refs" / f"r{r:02d}.png")
        for k in range(per_ref):
            name = f"dist/r{r:02d}_{k}.png"
            write_image(root / name)
            lines.append(f"{name},{(r * per_ref + k) % 17 + 1},r{r:02d}.png,{k}")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return load_dataset(root, "generic")


def group_of(ds: Dataset) -> dict[str, str]:
    return {ds.relative(r.image): r.group for r in ds.records}


@pytest.mark.parametrize("ratios, groups_per_part", [
    ("8:2", {"train": 16, "test": 4}),
    ("7:1:2", {"train": 14, "val": 2, "test": 4}),
    ("6:2:2", {"train": 12, "val": 4, "test": 4}),
])
def test_parts_are_content_disjoint_and_follow_ratios(tmp_path, ratios, groups_per_part):
    ds = make_synthetic(tmp_path)
    splits = make_splits(ds, ratios, count=5, seed=0)
    assert len(splits) == 5 and splits.part_names == tuple(groups_per_part)
    groups = group_of(ds)
    for k in range(len(splits)):
        seen: dict[str, str] = {}
        for name, want in groups_per_part.items():
            part_groups = {groups[p] for p in splits.splits[k][name]}
            assert len(part_groups) == want
            assert len(splits.splits[k][name]) == want * PER_REF
            for g in part_groups:
                assert seen.setdefault(g, name) == name, f"group {g} in {seen[g]} and {name}"
        assert sorted(p for part in splits.splits[k].values() for p in part) == sorted(groups)


def test_authentic_dataset_splits_by_image_and_approximates_ratio(tmp_path):
    lines = ["image,mos"] + [f"img{i:03d}.png,{i % 9}" for i in range(53)]
    for i in range(53):
        write_image(tmp_path / f"img{i:03d}.png")
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(tmp_path, "generic")
    split = make_splits(ds, "8:2", count=1, seed=3).splits[0]
    assert len(split["train"]) == 42 and len(split["test"]) == 11  # 53 * 0.8 = 42.4
    assert not set(split["train"]) & set(split["test"])


def test_seeds_are_deterministic(tmp_path):
    ds = make_synthetic(tmp_path)
    a = make_splits(ds, "8:2", count=4, seed=7)
    b = make_splits(ds, "8:2", count=4, seed=7)
    c = make_splits(ds, "8:2", count=4, seed=8)
    assert a.splits == b.splits
    assert a.splits != c.splits
    assert len({tuple(s["test"]) for s in a.splits}) == 4  # the splits differ from each other
    assert make_splits(ds, "8:2", count=2, seed=7).splits == a.splits[:2]  # split k does not depend on count


def test_save_and_load_round_trip(tmp_path):
    root = tmp_path / "data"
    ds = make_synthetic(root)
    splits = make_splits(ds, "7:1:2", count=3, seed=1)
    path = save_splits(splits, tmp_path / "out" / "splits.json")
    data = json.loads(path.read_text())
    assert data["dataset"]["format"] == "generic" and data["dataset"]["root"] == str(root.resolve())
    assert data["dataset"]["csv"] == "meta.csv" and data["dataset"]["groups"] == N_REFS
    assert data["ratios"] == [7, 1, 2] and data["seed"] == 1 and data["count"] == 3
    assert data["splits"][0]["val"][0].startswith("dist/")  # relative to the root

    loaded = load_splits(path)
    assert loaded.splits == splits.splits and loaded.ratios == (7.0, 1.0, 2.0)
    test = loaded.part(2, "test")
    assert [r.image for r in test] == [r.image for r in splits.part(2, "test")]
    assert all(r.image.is_file() and 0 <= r.mos <= 1 for r in test)


def test_load_moved_dataset_and_given_dataset(tmp_path):
    ds = make_synthetic(tmp_path / "old")
    path = save_splits(make_splits(ds, "8:2", count=1), tmp_path / "splits.json")
    shutil.move(tmp_path / "old", tmp_path / "new")
    with pytest.raises(DatasetError, match="not found"):
        load_splits(path).part(0, "train")
    moved = load_splits(path, root=tmp_path / "new")
    assert moved.part(0, "train")[0].image.is_relative_to(tmp_path / "new")
    given = load_splits(path, dataset=load_dataset(tmp_path / "new", "generic"))
    assert len(given.part(0, "test")) == 4 * PER_REF


def test_part_errors(tmp_path):
    ds = make_synthetic(tmp_path)
    splits = make_splits(ds, "8:2", count=2)
    with pytest.raises(IndexError, match="holds 2 splits"):
        splits.part(2, "train")
    with pytest.raises(ValueError, match="no part 'val'.*train, test"):
        splits.part(0, "val")
    splits.splits[0]["train"].append("dist/ghost.png")
    with pytest.raises(DatasetError, match="ghost.png"):
        splits.part(0, "train")


def test_ratio_parsing_and_sizes():
    assert parse_ratios("8:2") == (8.0, 2.0) and parse_ratios([6, 2, 2]) == (6.0, 2.0, 2.0)
    for bad in ("8", "8:x", "1:1:1:1", "8:0", "-1:2"):
        with pytest.raises(ValueError, match="ratios"):
            parse_ratios(bad)
    assert part_sizes(29, (8, 2)) == [23, 6]  # LIVE protocol
    assert part_sizes(3, (8, 1, 1)) == [1, 1, 1]  # every part gets a group
    with pytest.raises(ValueError, match="at least 3 distinct groups"):
        part_sizes(2, (7, 1, 2))


def test_too_few_groups_and_bad_count(tmp_path):
    ds = make_synthetic(tmp_path, n_refs=2, per_ref=2)
    with pytest.raises(ValueError, match="cannot split 2 content group"):
        make_splits(ds, "6:2:2")
    with pytest.raises(ValueError, match="count must be at least 1"):
        make_splits(ds, "8:2", count=0)


def test_load_bad_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_splits(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"ratios": [8, 2]}')
    with pytest.raises(ValueError, match="not a valid splits file"):
        load_splits(tmp_path / "bad.json")


def run_cli(argv: list[str]) -> int:
    """`python -m iqa splits ...` through this module's own sub-parser (other commands not needed)."""
    parser = argparse.ArgumentParser()
    splits_module.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(tmp_path, capsys):
    assert "iqa.data.splits" in cli.COMMAND_MODULES
    make_synthetic(tmp_path / "data")
    out = tmp_path / "splits.json"
    status = run_cli(["splits", "--data", str(tmp_path / "data"), "--format", "generic",
                      "--ratios", "7:1:2", "--count", "3", "--seed", "0", "--out", str(out)])
    assert status == 0 and "3 splits 7:1:2" in capsys.readouterr().out
    assert load_splits(out).part_names == ("train", "val", "test")

    status = run_cli(["splits", "--data", str(tmp_path / "data"), "--format", "tid2013", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error:") and "not a TID2013 folder" in err
