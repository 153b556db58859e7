"""scripts/diffusion_probe.py: the per-level and sampler PSNRs of a diffusion network."""

import pytest
import torch

from helpers import load_script
from iqa.config import tiny
from iqa.diffusion import Diffusion


@pytest.fixture(scope="module")
def probe_module():
    return load_script("diffusion_probe")


def test_untrained_residual_network_scores_as_its_input(probe_module):
    """Zero-initialised last layer (residual target, x0 prediction): every estimate is the input."""
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    dist = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    net = Diffusion(tiny().diffusion).eval()
    row = probe_module.probe(net, dist, ref, seed=0)
    assert len(row) == net.cfg.sample_steps + 1
    assert row == pytest.approx([probe_module.psnr(dist, ref)] * len(row), abs=1e-4)


def test_a_network_handed_the_truth_beats_the_input(probe_module):
    """A network whose x0 estimate is its noisy input: at the lowest noise level it nearly returns
    the truth (well above the input), at pure noise it returns noise (far below)."""
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    dist = (ref + 0.3 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    cfg = tiny().diffusion
    cfg.sample_steps = 50  # t = 1 then carries little noise
    net = Diffusion(cfg).eval()
    net.unet.forward = lambda x, gamma: x[:, 3:] / gamma[:, None, None, None]  # x_t / sqrt(ab)
    row = probe_module.probe(net, dist, ref, seed=0)
    assert row[0] > probe_module.psnr(dist, ref) + 3 > row[cfg.sample_steps - 1] + 3


def test_probe_of_a_run_restricted_to_kinds(probe_module, pairs_dir, tmp_path, monkeypatch, capsys):
    """A run trained with --kinds is probed on held-out pairs of those kinds; an absent kind is refused."""
    from iqa.train_diffusion import DiffusionTrainOptions, train_diffusion

    run = tmp_path / "run"
    train_diffusion(DiffusionTrainOptions(data=str(pairs_dir), kinds=("noise",), preset="tiny", out=str(run),
                                          steps=2, batch=2, crop=32, lr=1e-3, sample_every=0, val_pairs=1))
    monkeypatch.setattr("sys.argv", ["probe", str(run), "--sizes", "32", "--pairs", "2", "--threads", "1"])
    assert probe_module.main() == 0
    out = capsys.readouterr().out
    assert "held-out pairs of noise" in out and out.count("| 32 | raw |") == 1
    monkeypatch.setattr("sys.argv", ["probe", str(run), "--sizes", "32", "--pairs", "2", "--kinds", "all"])
    assert probe_module.main() == 0
    assert "held-out pairs, PSNR" in capsys.readouterr().out  # every kind: no "of ..."
    monkeypatch.setattr("sys.argv", ["probe", str(run), "--sizes", "32", "--kinds", "jpeg"])
    with pytest.raises(SystemExit, match="no pairs of kind jpeg"):
        probe_module.main()
