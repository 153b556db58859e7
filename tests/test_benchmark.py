import pytest

from iqa.assess import Assessor
from iqa.benchmark import format_result, run_benchmark, run_folder
from tests.helpers import tiny_model


def test_benchmark_reports_parameters_stages_and_brisque():
    r = run_benchmark(Assessor(tiny_model(), device="cpu", bf16=("vcg",)), size=(256, 240), crops=2, warmup=False,
                      repeats=2)
    assert r.parameters["total"] == sum(v for k, v in r.parameters.items() if k != "total")
    assert {"diffusion", "backbones", "vcg", "vda", "maps", "total"} <= set(r.seconds)
    assert 0 < r.best_s <= r.median_s and r.brisque_median_s > 0 and r.ratio > 0
    assert r.cached_s < r.best_s  # the repeated image comes from the assessor's memory
    text = format_result(r)
    assert "BRISQUE" in text and "ratio" in text and "cached re-analysis" in text and "target" in text
    assert "diffusion on: region; bf16 autocast: vcg" in text  # what the timed pipeline ran
    r.unet_scale, r.full_res_steps = 2, 1
    assert "diffusion on: region (U-Net at 1/2 resolution, its last 1 step(s) at full)" in format_result(r)
    with pytest.raises(ValueError, match="repeats"):
        run_benchmark(Assessor(tiny_model(), device="cpu"), repeats=0)


def test_batch_folder_counts_images_and_failures(tmp_path):
    from PIL import Image
    from helpers import photo
    for i in range(2):
        Image.fromarray(photo(64, 48)).save(tmp_path / f"p{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    r = run_folder(Assessor(tiny_model(), device="cpu"), tmp_path, crops=1)
    assert (r.images, r.failed) == (2, 1) and r.images_per_s > 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        run_folder(Assessor(tiny_model(), device="cpu"), tmp_path / "empty")


def test_train_throughput_times_the_modes_asked_for():
    from iqa.benchmark import train_throughput
    # bf16 is left out here: its first CPU step alone takes ~30 s (kernel set-up)
    modes = ("float32", "channels_last")
    rates = train_throughput(tiny_model(), series=1, crop=48, repeats=1, modes=modes, free_from_block=3)
    assert set(rates) == set(modes) and all(r > 0 for r in rates.values())
    with pytest.raises(ValueError, match="repeats"):
        train_throughput(tiny_model(), repeats=0)
