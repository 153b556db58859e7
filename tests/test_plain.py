import numpy as np
import pytest

from iqa.data.distortions import KINDS
from iqa.data.plain import PLAIN_KINDS, all_kinds

from helpers import photo


def _psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("name", list(PLAIN_KINDS))
def test_each_kind_keeps_shape_is_seeded_and_grows_with_level(name):
    img = photo(160, 120)
    d = PLAIN_KINDS[name]
    outs = [d(img, lv, np.random.default_rng(3)) for lv in range(1, 6)]
    for out in outs:
        assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(outs[2], d(img, 3, np.random.default_rng(3)))
    psnr = [_psnr(o, img) for o in outs]
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr


def test_all_kinds_holds_plain_and_kadid_without_collisions():
    kinds = all_kinds()
    assert len(kinds) == len(PLAIN_KINDS) + len(KINDS) == 31
    assert list(kinds)[:6] == list(PLAIN_KINDS)
