import dataclasses

import torch

from iqa.config import VDAConfig
from iqa.vda import VDA, Standardise


def test_standardise_learns_running_statistics_from_any_batch_size():
    torch.manual_seed(0)
    norm = Standardise(3, momentum=0.05).train()
    data = torch.randn(4000, 3) * torch.tensor([1e-3, 1.0, 50.0]) + torch.tensor([5.0, -2.0, 300.0])
    norm(data[:1])  # a batch of one is fine
    for chunk in data.split(8):
        norm(chunk)
    norm.eval()
    out = norm(data)
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=0.2)
    assert torch.allclose(out.std(0), torch.ones(3), atol=0.2)
    assert torch.equal(norm(data[:5]), out[:5])  # eval: a sample's output does not depend on its batch


def test_vda_with_input_norm_ignores_feature_scale():
    torch.manual_seed(0)
    cfg = dataclasses.replace(VDAConfig(), grid=4, token_dim=8, dropout=0.0, input_norm=True)
    vda = VDA(cfg, dim_in=6).train()
    g = torch.rand(16, 4, 6)
    vda(g)  # fits the running statistics
    vda.eval()
    scale = torch.tensor([0.05, 1.0, 10.0, 1e3, 1.0, 0.5])
    s, f, w = vda(g)
    vda_scaled = VDA(cfg, dim_in=6)
    vda_scaled.load_state_dict(vda.state_dict())
    for norm in vda_scaled.norms:  # the same statistics in the scaled units
        norm.mean.mul_(scale)
        norm.var.mul_(scale ** 2)
    s2, _, _ = vda_scaled.eval()(g * scale)
    assert s.shape == (16,) and f.shape == w.shape == (16, 4, 4)
    assert torch.allclose(s, s2, atol=1e-4)
