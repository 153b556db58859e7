"""scripts/precision_probe.py: each variant's score change is measured against the first one."""

import copy

import numpy as np

from helpers import load_script, photo, tiny_model
from iqa.assess import Assessor


def test_variants_are_compared_with_the_reference():
    probe = load_script("precision_probe")
    variants = (probe.Variant("reference", "crops", ()), probe.Variant("same again", "crops", ()),
                probe.Variant("other seed", "crops", (), seed=3), probe.Variant("bf16 vcg", "region", ("vcg",)))
    model, built = tiny_model(), []

    def assessor_for(v):
        m = copy.deepcopy(model)  # the same weights; the variant's own pipeline settings
        m.cfg.diffusion.on = v.on
        built.append(Assessor(m, device="cpu", bf16=v.bf16))
        return built[-1]

    images = [photo(256, 240), np.ascontiguousarray(photo(256, 240)[::-1])]
    ref, same, seed, bf16 = probe.run_variants(assessor_for, images, variants)
    assert ref.mean_abs_change == same.mean_abs_change == 0.0  # one pipeline, one score
    assert seed.max_abs_change > 0 and bf16.max_abs_change >= bf16.mean_abs_change > 0
    assert all(r.median_s > 0 for r in (ref, same, seed, bf16))
    assert [a.bf16 for a in built] == [(), (), (), ("vcg",)]
    assert [a.cfg.diffusion.on for a in built] == ["crops"] * 3 + ["region"]
