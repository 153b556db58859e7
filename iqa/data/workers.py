"""Worker processes for the data pipelines (the synthetic stream, `synth`): how they start.

Spawned workers each import torch, timm/torchvision (through piq) and the pipeline's module again, about 4 s
apiece on a 2-core CPU. A fork server that preloaded them starts each worker by forking a process that
already has them; forking the caller itself is unsafe once torch's threads run.
"""
from __future__ import annotations

import multiprocessing as mp


def worker_context(module: str):
    """A multiprocessing context for workers whose target lives in `module`: a fork server that preloaded
    it (only the first context's preload counts, as the server is started once), or spawn where there is none."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([module])
    return ctx
