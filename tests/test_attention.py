import torch

from iqa.attention import RTAB, TAB, DualHead, SwinStage


def test_tab_is_channel_attention_with_residual():
    tab = TAB(tokens=16, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    y = tab(x)
    assert y.shape == x.shape
    with torch.no_grad():
        tab.v.weight.zero_(), tab.v.bias.zero_()
    assert torch.allclose(tab(x), x)  # zero values -> only the residual remains


def test_rtab_shapes_and_residual_path():
    rtab = RTAB(dim_in=10, grid=4, channels=3, dropout=0.0).eval()
    g = torch.randn(2, 10)
    out = rtab(g, g.abs(), g.abs(), g.abs())
    assert out.shape == (2, 16, 3)
    with torch.no_grad():
        for p in rtab.v.parameters():
            p.zero_()
    assert torch.allclose(rtab(g, g.abs(), g.abs(), g.abs()), rtab.res(g))  # V = 0 -> residual only


def test_swin_stage_keeps_shape():
    stage = SwinStage(dim=8, resolution=8, depths=(2, 2), heads=(2, 2), window=4, mlp_hidden=16,
                      drop_path=0.1, scale=0.8).eval()
    x = torch.randn(2, 8, 8, 8)
    assert stage(x).shape == x.shape


def test_dual_head_pools_scores_by_weights():
    head = DualHead(dim=4, dropout=0.0).eval()
    s, f, w = head(torch.randn(3, 10, 4))
    assert s.shape == (3,) and f.shape == w.shape == (3, 10)
    assert torch.allclose(s, (f * w).sum(1) / w.sum(1), atol=1e-6)
    assert (f >= 0).all() and ((w > 0) & (w < 1)).all()
