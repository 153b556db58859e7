import pytest
from PIL import Image

from iqa.data.sources import SourceError, find_sources

from helpers import photo


def test_sources_are_sorted_images_with_unique_safe_names(tmp_path):
    for name in ("b photo.png", "a.jpg", "b-photo.png", "notes.txt"):
        path = tmp_path / name
        if name.endswith(".txt"):
            path.write_text("not an image")
        else:
            Image.fromarray(photo(32, 24)).save(path)
    (tmp_path / "sub").mkdir()
    found = find_sources(tmp_path)
    assert [s.path.name for s in found] == ["a.jpg", "b photo.png", "b-photo.png"]
    assert [s.name for s in found] == ["a", "b-photo", "b-photo-2"]
    assert found[0].ref_names(2) == ["a_c0", "a_c1"]
    assert [s.name for s in find_sources(tmp_path / "a.jpg")] == ["a"]


def test_missing_or_empty_folder_says_what_is_wrong(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        find_sources(tmp_path / "nope")
    with pytest.raises(SourceError, match="no images"):
        find_sources(tmp_path)
