"""Dataset readers on tiny copies of every public layout, built in tmp_path with real file formats."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from iqa.data.datasets import (
    CLIVE_TRAINING_IMAGES, FORMATS, LIVE_DISTORTIONS, DatasetError, Record, detect_format, load_dataset,
)

IMAGE_SIDE = 8
_ENCODED: dict[str, bytes] = {}


def write_image(path: Path, seed: int = 0) -> Path:
    """A small noise image in the format its extension names (bytes cached per format)."""
    fmt = {".bmp": "BMP", ".png": "PNG", ".jpg": "JPEG"}[path.suffix.lower()]
    if fmt not in _ENCODED:
        pixels = np.random.default_rng(seed).integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=fmt)
        _ENCODED[fmt] = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_ENCODED[fmt])
    return path


def cell(names: list[str], column: bool = False) -> np.ndarray:
    """A MATLAB cell array of strings, as the releases store file names."""
    arr = np.empty((len(names), 1) if column else (1, len(names)), dtype=object)
    for i, n in enumerate(names):
        arr.flat[i] = n
    return arr


# --------------------------------------------------------------------------------------------- LIVE
LIVE_REFS = ["bikes.bmp", "caps.bmp", "house.bmp"]


def make_live(root: Path, realigned: bool = False, info_txt: bool = False) -> tuple[np.ndarray, np.ndarray]:
    total = sum(n for _, n in LIVE_DISTORTIONS)
    rng = np.random.default_rng(1)
    dmos = rng.uniform(10, 90, total)
    orgs = np.zeros(total)
    orgs[::50] = 1  # reference copies inside the distortion folders
    dmos[orgs == 1] = 0
    refnames = [LIVE_REFS[i % len(LIVE_REFS)] for i in range(total)]
    for r in LIVE_REFS:
        write_image(root / "refimgs" / r)
    i = 0
    for folder, count in LIVE_DISTORTIONS:
        lines = []
        for k in range(1, count + 1):
            write_image(root / folder / f"img{k}.bmp")
            lines.append(f"{refnames[i]} img{k}.bmp 0.5")
            i += 1
        if info_txt:
            (root / folder / "info.txt").write_text("\n".join(lines) + "\n")
    if realigned:
        scipy.io.savemat(root / "dmos_realigned.mat", {"dmos_new": dmos[None], "orgs": orgs[None],
                                                       "dmos_std": np.full((1, total), 3.0)})
    else:
        scipy.io.savemat(root / "dmos.mat", {"dmos": dmos[None], "orgs": orgs[None]})
    if not info_txt:
        scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": cell(refnames)})
    return dmos, orgs


def test_live_records_groups_and_dmos_direction(tmp_path):
    dmos, orgs = make_live(tmp_path)
    ds = load_dataset(tmp_path, "live")
    assert ds.lower_is_better and ds.format == "live"
    assert len(ds) == int((orgs == 0).sum())
    first = ds.records[0]  # entry 1 is an original (orgs[0] = 1), so the first record is entry 2
    assert first.image == tmp_path / "jp2k" / "img2.bmp"
    assert first.ref == tmp_path / "refimgs" / LIVE_REFS[1]
    assert first.group == f"refimgs/{LIVE_REFS[1]}" and first.extra["distortion"] == "jp2k"
    assert ds.records[-1].extra["distortion"] == "fastfading"
    kept = dmos[orgs == 0]
    worst = max(ds.records, key=lambda r: r.raw)
    assert worst.raw == pytest.approx(kept.max()) and worst.mos == pytest.approx(0.0)
    assert min(ds.records, key=lambda r: r.raw).mos == pytest.approx(1.0)
    assert sorted(ds.groups) == [f"refimgs/{r}" for r in LIVE_REFS]


def test_live_realigned_scores_and_info_txt_refs(tmp_path):
    make_live(tmp_path, realigned=True, info_txt=True)
    ds = load_dataset(tmp_path, "live")
    assert ds.label_file.name == "dmos_realigned.mat"
    assert ds.records[0].extra["dmos_std"] == pytest.approx(3.0)
    assert ds.records[0].ref.name == LIVE_REFS[1]


def test_live_wrong_entry_count(tmp_path):
    make_live(tmp_path)
    scipy.io.savemat(tmp_path / "dmos.mat", {"dmos": np.ones((1, 10)), "orgs": np.zeros((1, 10))})
    with pytest.raises(DatasetError, match="982"):
        load_dataset(tmp_path, "live")


# --------------------------------------------------------------------------------------------- CSIQ
CSIQ_ROWS = [  # image, dst_idx, dst_type, dst_lev, dmos_std, dmos
    (1600, 1, "noise", 1, 0.02, 0.06),
    (1600, 4, "1/f noise", 2, 0.03, 0.30),
    ("aerial_city", 3, "jpeg 2000", 1, 0.01, 0.12),
    ("aerial_city", 5, "blur", 5, 0.04, 0.85),
]
CSIQ_FILES = ["dst_imgs/awgn/1600.AWGN.1.png", "dst_imgs/fnoise/1600.fnoise.2.png",
              "dst_imgs/jpeg2000/aerial_city.jpeg2000.1.png", "dst_imgs/blur/aerial_city.BLUR.5.png"]


def make_csiq(root: Path, excel: bool = True) -> None:
    for ref in ("1600", "aerial_city"):
        write_image(root / "src_imgs" / f"{ref}.png")
    for name in CSIQ_FILES:
        write_image(root / name)
    header = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]
    if excel:
        import openpyxl

        book = openpyxl.Workbook()
        book.active.title = "notes"
        sheet = book.create_sheet("all_by_image")
        sheet.append(["CSIQ subjective ratings"])  # title row above the header, first column blank
        sheet.append([None] + header)
        for row in CSIQ_ROWS:
            sheet.append([None] + [float(v) if isinstance(v, int) else v for v in row])
        book.save(root / "csiq.DMOS.xlsx")
    else:
        lines = [",".join(header)] + [",".join(str(v) for v in row) for row in CSIQ_ROWS]
        (root / "csiq.DMOS.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("excel", [True, False])
def test_csiq_xlsx_and_csv_export(tmp_path, excel):
    make_csiq(tmp_path, excel=excel)
    ds = load_dataset(tmp_path, "csiq")
    assert [r.image for r in ds.records] == [(tmp_path / n) for n in CSIQ_FILES]
    assert [r.raw for r in ds.records] == [row[5] for row in CSIQ_ROWS]
    assert ds.records[0].mos == pytest.approx(1.0) and ds.records[3].mos == pytest.approx(0.0)  # DMOS
    assert ds.records[1].extra == {"distortion": "fnoise", "level": 2, "dmos_std": 0.03}
    assert {r.group for r in ds.records} == {"src_imgs/1600.png", "src_imgs/aerial_city.png"}


def test_csiq_unknown_distortion_type(tmp_path):
    make_csiq(tmp_path, excel=False)
    text = (tmp_path / "csiq.DMOS.csv").read_text().replace("blur", "sharpen")
    (tmp_path / "csiq.DMOS.csv").write_text(text)
    with pytest.raises(DatasetError, match="unknown distortion type 'sharpen' \\(row 5\\)"):
        load_dataset(tmp_path, "csiq")


# ------------------------------------------------------------------------------------------ TID2013
TID_LINES = ["5.51429 I01_01_1.bmp", "4.20000 i01_08_3.bmp", "6.10000 I25_01_1.bmp", "1.50000 i25_24_5.bmp"]


def make_tid(root: Path) -> None:
    write_image(root / "reference_images" / "I01.BMP")
    write_image(root / "reference_images" / "i25.bmp")  # the release's one lower-case reference
    for line in TID_LINES:
        write_image(root / "distorted_images" / line.split()[1].lower())
    (root / "mos_with_names.txt").write_text("\n".join(TID_LINES) + "\n")


def test_tid2013_case_insensitive_names_and_mos_direction(tmp_path):
    make_tid(tmp_path)
    ds = load_dataset(tmp_path, "tid2013")
    assert not ds.lower_is_better and len(ds) == 4
    assert ds.records[0].image == tmp_path / "distorted_images" / "i01_01_1.bmp"
    assert ds.records[0].ref == tmp_path / "reference_images" / "I01.BMP"
    assert ds.records[2].group == "reference_images/i25.bmp"
    assert ds.records[1].extra == {"distortion": 8, "level": 3}
    assert ds.records[2].mos == pytest.approx(1.0) and ds.records[3].mos == pytest.approx(0.0)
    assert ds.records[0].mos == pytest.approx((5.51429 - 1.5) / (6.1 - 1.5))


def test_missing_files_are_counted_and_named(tmp_path):
    make_tid(tmp_path)
    (tmp_path / "distorted_images" / "i01_08_3.bmp").unlink()
    (tmp_path / "distorted_images" / "i25_24_5.bmp").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path, "tid2013")
    msg = str(err.value)
    assert "2 of 4 image file(s)" in msg and "i01_08_3.bmp" in msg and "i25_24_5.bmp" in msg


def test_missing_reference_is_reported(tmp_path):
    make_tid(tmp_path)
    (tmp_path / "reference_images" / "i25.bmp").unlink()
    with pytest.raises(DatasetError, match="1 reference image.*i25.bmp"):
        load_dataset(tmp_path, "tid2013")


def test_tid2013_missing_score(tmp_path):
    make_tid(tmp_path)
    (tmp_path / "mos_with_names.txt").write_text("5.5 I01_01_1.bmp\nnan I01_08_3.bmp\nabc I25_01_1.bmp\n")
    with pytest.raises(DatasetError, match="line 2, line 3"):
        load_dataset(tmp_path, "tid2013")


# ---------------------------------------------------------------------------------------- KADID-10k
def make_kadid(root: Path) -> None:
    rows = [("I01_01_01.png", "I01.png", 4.57, 0.49), ("I01_01_05.png", "I01.png", 1.20, 0.30),
            ("I02_17_03.png", "I02.png", 3.10, 0.81)]
    for dist, ref, _, _ in rows:
        write_image(root / "images" / dist)
        write_image(root / "images" / ref)
    lines = ["dist_img,ref_img,dmos,var"] + [f"{d},{r},{s},{v}" for d, r, s, v in rows]
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")


def test_kadid10k(tmp_path):
    make_kadid(tmp_path)
    ds = load_dataset(tmp_path, "kadid10k")
    assert [r.image.name for r in ds.records] == ["I01_01_01.png", "I01_01_05.png", "I02_17_03.png"]
    assert ds.records[0].mos == pytest.approx(1.0) and ds.records[1].mos == pytest.approx(0.0)  # higher = better
    assert ds.records[2].extra == {"distortion": 17, "level": 3, "var": 0.81}
    assert ds.groups == ["images/I01.png", "images/I02.png"]


# ---------------------------------------------------------------------------------------- KonIQ-10k
def make_koniq(root: Path) -> None:
    names = ["10004473376.jpg", "10007357496.jpg", "100117038.jpg"]
    for n in names:
        write_image(root / "1024x768" / n)
    sets = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set",
            f"{names[0]},0.0,0.0,0.24,0.70,0.07,105,77.38,0.53,training",
            f"{names[1]},0.0,0.03,0.47,0.49,0.01,96,68.73,0.58,test",
            f"{names[2]},0.0,0.01,0.21,0.72,0.06,100,15.11,0.53,validation"]
    (root / "koniq10k_distributions_sets.csv").write_text("\n".join(sets) + "\n")
    scores = ['"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"',
              f'"{names[0]}",0,0,0.24,0.70,0.07,105,3.83,0.53,77.38',
              f'"{names[1]}",0,0.03,0.47,0.49,0.01,96,3.49,0.58,68.73',
              f'"{names[2]}",0,0.01,0.21,0.72,0.06,100,1.20,0.53,15.11']
    (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(scores) + "\n")


def test_koniq10k_sets_file_keeps_official_split(tmp_path):
    make_koniq(tmp_path)
    ds = load_dataset(tmp_path, "koniq10k")
    assert ds.label_file.name == "koniq10k_distributions_sets.csv"
    assert [r.raw for r in ds.records] == [77.38, 68.73, 15.11]
    assert ds.records[0].mos == pytest.approx(1.0) and ds.records[2].mos == pytest.approx(0.0)
    assert [r.extra["set"] for r in ds.records] == ["training", "test", "validation"]
    assert all(r.ref is None and r.group == f"1024x768/{r.image.name}" for r in ds.records)


def test_koniq10k_scores_file_uses_zscore_column(tmp_path):
    make_koniq(tmp_path)
    ds = load_dataset(tmp_path, "koniq10k", csv="koniq10k_scores_and_distributions.csv")
    assert [r.raw for r in ds.records] == [77.38, 68.73, 15.11]
    assert ds.records[0].extra["MOS_1to5"] == pytest.approx(3.83)


# --------------------------------------------------------------------------------------------- CLIVE
def make_clive(root: Path) -> list[str]:
    training = [f"t{i}.bmp" for i in range(1, CLIVE_TRAINING_IMAGES + 1)]
    names = ["10.bmp", "1000.JPG", "101.bmp", "102.bmp"]
    for t in training:
        write_image(root / "Images" / "trainingImages" / t)
    for n in names:
        write_image(root / "Images" / n.lower())  # lower-case on disk, upper-case in the .mat
    mos = np.concatenate([np.full(len(training), 50.0), [63.9, 25.3, 71.2, 48.0]])
    (root / "Data").mkdir()
    images = cell(training + names, column=True)
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": images})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos[None]})
    scipy.io.savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.full((1, mos.size), 19.0)})
    return names


def test_clive_drops_training_images(tmp_path):
    names = make_clive(tmp_path)
    ds = load_dataset(tmp_path, "clive")
    assert [r.image.name.lower() for r in ds.records] == [n.lower() for n in names]
    assert [r.raw for r in ds.records] == [63.9, 25.3, 71.2, 48.0]
    assert ds.records[2].mos == pytest.approx(1.0) and ds.records[1].mos == pytest.approx(0.0)
    assert ds.records[0].group == "Images/10.bmp" and ds.records[0].extra == {"std": 19.0}


def test_clive_length_mismatch(tmp_path):
    make_clive(tmp_path)
    scipy.io.savemat(tmp_path / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.ones((1, 3))})
    with pytest.raises(DatasetError, match="lists 11 images but .* has 3 scores"):
        load_dataset(tmp_path, "clive")


# --------------------------------------------------------------------------------------------- PIPAL
def make_pipal(root: Path) -> None:
    labels = {"A0001": [("A0001_00_00.bmp", 1500.5), ("A0001_10_02.bmp", 1210.0)],
              "A0002": [("A0002_01_01.bmp", 1622.3)]}
    for ref, rows in labels.items():
        write_image(root / "Train_Ref" / f"{ref}.bmp")
        for name, _ in rows:
            write_image(root / "Train_Dis" / name)
        (root / "Train_Label").mkdir(exist_ok=True)
        (root / "Train_Label" / f"{ref}.txt").write_text("".join(f"{n},{s}\n" for n, s in rows))


def test_pipal(tmp_path):
    make_pipal(tmp_path)
    ds = load_dataset(tmp_path, "pipal")
    assert [r.image.name for r in ds.records] == ["A0001_00_00.bmp", "A0001_10_02.bmp", "A0002_01_01.bmp"]
    assert ds.records[2].mos == pytest.approx(1.0) and ds.records[1].mos == pytest.approx(0.0)  # Elo
    assert ds.records[1].ref == tmp_path / "Train_Ref" / "A0001.bmp"
    assert ds.records[1].extra == {"distortion": 10, "level": 2}
    assert ds.groups == ["Train_Ref/A0001.bmp", "Train_Ref/A0002.bmp"]


# ------------------------------------------------------------------------------------------- generic
def make_generic(root: Path, lines: list[str], csv_name: str = "meta.csv") -> None:
    for name in ("a.png", "sub/b.png", "c.jpg"):
        write_image(root / name)
    write_image(root / "refs" / "r1.png")
    write_image(root / "r2.png")
    (root / csv_name).write_text("\n".join(lines) + "\n")


GENERIC_LINES = ["image,mos,ref,distortion,level",
                 "a.png,3.5,r1.png,blur,1",
                 "sub/b.png,1.0,r2.png,noise,2",
                 "c.jpg,4.5,,jpeg,3"]


def test_generic_paths_groups_and_extras(tmp_path):
    make_generic(tmp_path, GENERIC_LINES)
    ds = load_dataset(tmp_path, "generic")
    assert ds.name == tmp_path.name and not ds.lower_is_better
    a, b, c = ds.records
    assert a.ref == tmp_path / "refs" / "r1.png" and b.ref == tmp_path / "r2.png" and c.ref is None
    assert [r.group for r in ds.records] == ["refs/r1.png", "r2.png", "c.jpg"]
    assert b.extra == {"distortion": "noise", "level": 2}
    assert c.mos == pytest.approx(1.0) and b.mos == pytest.approx(0.0) and a.mos == pytest.approx(2.5 / 3.5)


def test_generic_lower_is_better_aliases_group_and_custom_csv(tmp_path):
    lines = ["dist_name;MOS;group", "a.png;10;scene1", "sub/b.png;30;scene1", "c.jpg;20;scene2"]
    make_generic(tmp_path, lines, csv_name="labels.csv")
    ds = load_dataset(tmp_path, "generic", csv="labels.csv", lower_is_better=True)
    assert ds.lower_is_better and ds.label_file == tmp_path / "labels.csv"
    assert [r.mos for r in ds.records] == pytest.approx([1.0, 0.0, 0.5])
    assert [r.group for r in ds.records] == ["scene1", "scene1", "scene2"]


def test_custom_label_file_replaces_the_standard_one(tmp_path):
    make_kadid(tmp_path)
    (tmp_path / "dmos.csv").rename(tmp_path / "kadid_subset.csv")
    with pytest.raises(DatasetError, match="missing: dmos.csv"):
        load_dataset(tmp_path, "kadid10k")
    assert len(load_dataset(tmp_path, "kadid10k", csv="kadid_subset.csv")) == 3


def test_lower_is_better_override_on_a_release(tmp_path):
    make_kadid(tmp_path)
    ds = load_dataset(tmp_path, "kadid10k", lower_is_better=True)
    assert ds.records[0].mos == pytest.approx(0.0)


@pytest.mark.parametrize("lines, pattern", [
    (["image,mos", "a.png,3", "sub/b.png,abc", "c.jpg,"], "non-numeric score at line 3, line 4"),
    (["image,mos", "a.png,3", "c.jpg,2", "a.png,4"], "listed more than once: a.png \\(line 2, line 4\\)"),
    (["image,mos"], "empty"),
    (["image,mos", "a.png,3", "c.jpg,3"], "every score equals 3.0"),
    (["picture,mos", "a.png,3"],
     "no 'image' column \\(also accepted: dist_name, dist_img\\); columns found: picture, mos"),
    (["image,score", "a.png,3"], "no 'mos' column"),
    (["image,mos,ref", "a.png,3,nowhere.png", "c.jpg,2,"], "1 reference image.*nowhere.png"),
    (["image,mos", "a.png,3", "../outside.png,2"], "line 3: '../outside.png' is not inside the dataset folder"),
    (["image,mos,ref", "a.png,3,/etc/hostname", "c.jpg,2,"], "line 2: '/etc/hostname' is not inside"),
    (["image,mos", "a.png,3", "c.jpg," + "x" * 200_000], "line 3: not readable as CSV \\(field larger"),
])
def test_generic_errors(tmp_path, lines, pattern):
    make_generic(tmp_path, lines)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(tmp_path, "generic")


def test_generic_without_csv_says_what_is_needed(tmp_path):
    make_kadid(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path, "generic")
    msg = str(err.value)
    assert "no meta.csv" in msg and "image, mos" in msg and "--format kadid10k" in msg


# ---------------------------------------------------------------------------- layout and arguments
MAKERS = {"live": make_live, "csiq": make_csiq, "tid2013": make_tid, "kadid10k": make_kadid,
          "koniq10k": make_koniq, "clive": make_clive, "pipal": make_pipal,
          "generic": lambda root: make_generic(root, GENERIC_LINES)}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_layout_loads_and_is_detected(tmp_path, fmt):
    MAKERS[fmt](tmp_path)
    ds = load_dataset(tmp_path, fmt)
    assert len(ds) > 0 and all(isinstance(r, Record) for r in ds.records)
    assert all(0.0 <= r.mos <= 1.0 and r.image.is_file() for r in ds.records)
    assert min(r.mos for r in ds.records) == 0.0 and max(r.mos for r in ds.records) == 1.0
    assert detect_format(tmp_path) == fmt


def test_wrong_layout_says_what_was_expected_and_found(tmp_path):
    make_kadid(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path, "tid2013")
    msg = str(err.value)
    assert "not a TID2013 folder" in msg and "mos_with_names.txt" in msg
    assert "Found: dmos.csv, images/" in msg and "--format kadid10k" in msg


def test_wrong_layout_on_unknown_folder_points_to_generic(tmp_path):
    write_image(tmp_path / "photo.png")
    with pytest.raises(DatasetError, match="Found: photo.png.*--format generic"):
        load_dataset(tmp_path, "pipal")


def test_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset format 'bogus'"):
        load_dataset(tmp_path, "bogus")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "absent", "tid2013")
    make_pipal(tmp_path)
    with pytest.raises(DatasetError, match="--csv does not apply to PIPAL"):
        load_dataset(tmp_path, "pipal", csv="labels.csv")
    with pytest.raises(DatasetError, match="label file nope.csv not found"):
        load_dataset(tmp_path, "generic", csv="nope.csv")
    assert issubclass(DatasetError, ValueError)


def test_format_names_are_forgiving(tmp_path):
    make_kadid(tmp_path)
    assert load_dataset(tmp_path, "KADID-10k").format == "kadid10k"
