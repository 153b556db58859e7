"""The README's Python API example runs as written (on a tiny checkpoint and generated photos)."""

import math
import re
from pathlib import Path

from PIL import Image

from helpers import photo, tiny_model
from iqa.checkpoint import save_checkpoint

README = Path(__file__).resolve().parent.parent / "README.md"


def python_api_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_python_api_example_runs(tmp_path):
    code = python_api_example()
    checkpoint = save_checkpoint(tiny_model(), tmp_path / "best")
    files = {}
    for name in ("photo.jpg", "a.png", "b.jpg"):
        files[name] = tmp_path / name
        Image.fromarray(photo(240, 224)).save(files[name])
    for old, new in [("runs/lite/best", checkpoint), *files.items()]:
        assert f'"{old}"' in code, f"the README example no longer names {old}"
        code = code.replace(f'"{old}"', repr(str(new)))
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    assert math.isfinite(namespace["r"].score)
    assert len(namespace["results"]) == 2 and all(math.isfinite(x.score) for x in namespace["results"])
