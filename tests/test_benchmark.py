from iqa.assess import Assessor
from iqa.benchmark import format_result, run_benchmark
from tests.helpers import tiny_model


def test_benchmark_reports_parameters_and_stages():
    r = run_benchmark(Assessor(tiny_model(), device="cpu"), size=(256, 240), crops=2, warmup=False)
    assert r.parameters["total"] == sum(v for k, v in r.parameters.items() if k != "total")
    assert {"diffusion", "backbones", "vcg", "vda", "total"} <= set(r.seconds) and r.images_per_s > 0
    text = format_result(r)
    assert "parameters" in text and "images/s" in text
