"""scripts/locality_probe.py: a per-cell probe tells damaged from clean cells where features keep it."""

import pytest
import torch

from helpers import load_script

CROPS, CELLS, CHANNELS = 8, 16, 6


@pytest.fixture(scope="module")
def probe():
    return load_script("locality_probe")


def _labels():
    return [(torch.arange(CELLS) % 2 == i % 2).float() for i in range(CROPS)]


def test_probe_finds_damage_that_the_cells_carry_and_not_where_they_do_not(probe):
    torch.manual_seed(0)
    labels = _labels()
    carried = [torch.randn(CELLS, CHANNELS) + 3 * y[:, None] * torch.eye(CHANNELS)[0] for y in labels]
    mixed = [torch.randn(CELLS, CHANNELS) + 3 * y.mean() for y in labels]  # one value for the whole crop
    assert probe.probe_auc(carried, labels) > 0.95
    assert abs(probe.probe_auc(mixed, labels) - 0.5) < 0.2


def test_cells_reads_every_stage_layout(probe):
    grid = torch.randn(1, CHANNELS, 4, 4)
    tokens = grid.flatten(2)  # (1, C, N), as the TAB blocks keep them
    assert torch.equal(probe.cells(grid, 16), tokens[0].T)
    assert torch.equal(probe.cells(tokens, 16), tokens[0].T)
    assert torch.equal(probe.cells(tokens.transpose(1, 2), 16), tokens[0].T)
