import pytest

from iqa.assess import Assessor
from iqa.benchmark import format_result, run_benchmark
from tests.helpers import tiny_model


def test_benchmark_reports_parameters_and_stages():
    r = run_benchmark(Assessor(tiny_model(), device="cpu"), size=(256, 240), crops=2, warmup=False)
    assert r.parameters["total"] == sum(v for k, v in r.parameters.items() if k != "total")
    assert {"diffusion", "backbones", "vcg", "vda", "total"} <= set(r.seconds) and r.images_per_s > 0
    text = format_result(r)
    assert "parameters" in text and "images/s" in text


def test_train_throughput_times_the_modes_asked_for():
    from iqa.benchmark import train_throughput
    from tests.helpers import tiny_model
    # bf16 is left out here: its first CPU step alone takes ~30 s (kernel set-up)
    modes = ("float32", "channels_last")
    rates = train_throughput(tiny_model(), series=1, crop=48, repeats=1, modes=modes, free_from_block=3)
    assert set(rates) == set(modes) and all(r > 0 for r in rates.values())
    with pytest.raises(ValueError, match="repeats"):
        train_throughput(tiny_model(), repeats=0)
