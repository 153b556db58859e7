"""iqa/data/workers.py: the workers' start method."""
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from iqa.data.distortions import to_uint8
from iqa.data.workers import worker_context


def test_workers_start_from_a_fork_server_and_compute_as_in_process():
    ctx = worker_context("iqa.data.distortions")
    if sys.platform.startswith("linux"):
        assert ctx.get_start_method() == "forkserver"
    x = np.linspace(-0.2, 1.2, 24, dtype=np.float32).reshape(2, 4, 3)
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        assert np.array_equal(pool.submit(to_uint8, x).result(), to_uint8(x))


def test_spawn_where_there_is_no_fork_server(monkeypatch):
    monkeypatch.setattr(mp, "get_all_start_methods", lambda: ["spawn"])
    assert worker_context("iqa.data.distortions").get_start_method() == "spawn"
