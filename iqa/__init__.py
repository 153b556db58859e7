"""DiffV2IQA Studio: no-reference image quality assessment guided by diffusion restoration.

    import iqa
    assessor = iqa.load()              # the bundled default checkpoint
    result = assessor.assess("photo.jpg")
    print(result.score, result.s1, result.s2)

Names are imported lazily so that light modules (e.g. the synth workers) do not pay for torch/timm.
"""
from importlib import import_module

__version__ = "0.1.0"
_EXPORTS = {"Assessor": "iqa.assess", "load": "iqa.assess", "ModelConfig": "iqa.config", "preset": "iqa.config",
            "Assessment": "iqa.results", "NoisyState": "iqa.results", "PatchMaps": "iqa.results"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'iqa' has no attribute {name!r}")
