"""DiffV2IQA Studio: no-reference image quality assessment guided by diffusion restoration.

    import iqa
    assessor = iqa.load()              # the bundled default checkpoint
    result = assessor.assess("photo.jpg")
    print(result.score, result.s1, result.s2)
"""
from iqa.assess import Assessor, load
from iqa.config import ModelConfig, preset
from iqa.results import Assessment, NoisyState, PatchMaps

__all__ = ["Assessor", "Assessment", "ModelConfig", "NoisyState", "PatchMaps", "load", "preset"]
__version__ = "0.1.0"
