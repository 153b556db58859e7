"""The launched app driven through its API with gradio_client: /assess and /batch, two calls at once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.helpers import running_app
from ui.inspect_tab import example_images

pytestmark = pytest.mark.filterwarnings("ignore:.*copy keyword", "ignore:.*no_silent_downcasting")  # gradio + pandas 3
FAST = dict(checkpoint="tiny", steps=2, crops=1, seed=0, device="cpu")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("runs")) as url:
        yield Client(url, verbose=False)


def test_api_lists_assess_and_batch(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/assess", "/batch"} <= set(endpoints)
    params = [p["parameter_name"] for p in endpoints["/assess"]["parameters"]]
    assert params == ["image", "checkpoint", "steps", "crops", "seed", "device"]
    for name in ("/assess", "/batch"):  # every output is named, none generated ("value_21")
        labels = [r["label"] for r in endpoints[name]["returns"]]
        assert all(labels) and not any(label.startswith("value_") for label in labels), labels


def test_assess_example_returns_scores_and_images(client):
    example = example_images()[0]
    verdict, numbers, chart, pair, restoration, gallery, overlay, bar, *_ = client.predict(
        image=handle_file(example), **FAST, api_name="/assess")
    assert {"score", "s1", "s2", "band"} <= set(numbers) and numbers["source"] == Path(example).name
    vcg = numbers["patch_maps"]["vcg"]  # the numeric maps come with the API's answer
    assert vcg["spatial"] and len(vcg["score"]) == len(vcg["cell_boxes_xyxy"]) > 0
    assert numbers["patch_maps"]["vda"]["spatial"] is False and len(numbers["crop_s2"]) == len(numbers["crops"])
    assert f"{numbers['score']:.3f}" in verdict
    with Image.open(overlay) as im:
        assert im.size == tuple(numbers["size"])
    assert len(pair) == 2 and all(Path(p).is_file() for p in pair)
    assert "restoration changed" in restoration and len(gallery) == 4
    assert all(Path(g["image"]).is_file() for g in gallery)
    assert "σ=" in gallery[-2]["caption"] and "y0|" in gallery[-1]["caption"]
    for path in [overlay, *pair, *(g["image"] for g in gallery)]:  # lossless views, at the analysed size
        with Image.open(path) as im:
            assert im.format == "PNG", path


def test_two_simultaneous_assess_calls_complete(client):
    images = example_images()[:2]
    jobs = [client.submit(image=handle_file(p), **FAST, api_name="/assess") for p in images]
    results = [job.result(timeout=120) for job in jobs]
    assert [r[1]["source"] for r in results] == [Path(p).name for p in images]


def test_batch_endpoint_reports_bad_file(client, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    table, _hist, summary, downloads = client.predict(
        files=[handle_file(example_images()[0]), handle_file(str(bad))], **FAST, api_name="/batch")
    rows = {r[0]: r for r in table["data"]}
    assert rows["broken.jpg"][-1] and rows["broken.jpg"][1] is None
    assert isinstance(rows[Path(example_images()[0]).name][1], float)
    assert "1** file(s) could not be read" in summary
    js = next(p for p in downloads if p.endswith(".json"))
    assert len(json.loads(Path(js).read_text())["results"]) == 2
