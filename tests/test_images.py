import io

import numpy as np
import pytest
from PIL import Image

from iqa.images import MAX_SIDE, ImageError, load_image
from tests.helpers import photo


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_rgb_path_and_array_agree(tmp_path):
    a = photo(64, 48)
    p = tmp_path / "x.png"
    Image.fromarray(a).save(p)
    out = load_image(p)
    assert out.array.dtype == np.uint8 and np.array_equal(out.array, a) and not out.notices
    assert np.array_equal(load_image(a).array, a)


@pytest.mark.parametrize("data, match", [(b"", "empty"), (b"not an image at all", "not a readable image"),
                                          (_png(Image.new("RGB", (1, 1))), "1x1")])
def test_unusable_inputs_raise_clear_errors(data, match):
    with pytest.raises(ImageError, match=match) as e:
        load_image(data, name="upload.png")
    assert "upload.png" in str(e.value)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ImageError, match="nothere.jpg: file not found"):
        load_image(tmp_path / "nothere.jpg", name="nothere.jpg")


def test_truncated_file():
    data = _png(Image.fromarray(photo(64, 48)))
    with pytest.raises(ImageError, match="damaged|not a readable"):
        load_image(data[: len(data) // 2], name="cut.png")


def test_grayscale_and_rgba_are_converted():
    g = load_image(_png(Image.new("L", (40, 30), 100)))
    assert g.array.shape == (30, 40, 3) and (g.array == 100).all() and g.notices
    rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    out = load_image(_png(rgba))
    assert (out.array == 255).all() and "transparency" in out.notices[0]


def test_16_bit_png_is_scaled_not_clipped():
    a = np.full((30, 40), 32768, dtype=np.uint16)
    out = load_image(_png(Image.fromarray(a)))
    assert abs(int(out.array[0, 0, 0]) - 128) <= 1


def test_cmyk_jpeg():
    buf = io.BytesIO()
    Image.fromarray(photo(64, 48)).convert("CMYK").save(buf, "JPEG", quality=95)
    out = load_image(buf.getvalue())
    assert out.array.shape == (48, 64, 3) and any("CMYK" in n for n in out.notices)


def test_exif_rotation_is_applied():
    img = Image.fromarray(photo(64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    out = load_image(buf.getvalue())
    assert out.array.shape == (64, 48, 3) and any("EXIF" in n for n in out.notices)


def test_huge_image_is_downscaled_with_notice():
    out = load_image(_png(Image.new("RGB", (12000, 12000), (10, 20, 30))), name="huge.png")
    assert max(out.array.shape[:2]) == MAX_SIDE and "downscaled from 12000x12000" in out.notices[-1]


def test_bad_array_shape():
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 4, 4), np.uint8))


def test_invalid_exif_orientation_gets_no_rotation_notice():
    exif = Image.Exif()
    exif[0x0112] = 9  # not a valid orientation: Pillow leaves the image as it is
    buf = io.BytesIO()
    Image.fromarray(photo(64, 48)).save(buf, "JPEG", exif=exif)
    out = load_image(buf.getvalue())
    assert out.array.shape == (48, 64, 3) and not any("EXIF" in n for n in out.notices)


def test_extreme_strip_is_refused_before_any_resize():
    with pytest.raises(ImageError, match="strip.png: image is 16x4000 pixels, more than 16 times"):
        load_image(_png(Image.new("RGB", (16, 4000))), name="strip.png")
    assert load_image(_png(Image.new("RGB", (20, 320)))).array.shape == (320, 20, 3)  # 16:1 still passes


def test_float_image_with_nan_keeps_its_finite_pixels():
    a = np.linspace(0.0, 2.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    a[0, 0], a[0, 1] = np.nan, np.inf
    buf = io.BytesIO()
    Image.fromarray(a, "F").save(buf, "TIFF")
    out = load_image(buf.getvalue(), name="f.tif")
    assert out.array[-1, -1, 0] == 255 and out.array[0, 0, 0] == 0 and out.array.mean() > 100
    assert any("2 NaN or infinite" in n for n in out.notices)
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64), np.nan, np.float32), "F").save(buf, "TIFF")
    with pytest.raises(ImageError, match="nan.tif: floating-point image has no finite"):
        load_image(buf.getvalue(), name="nan.tif")


def test_animated_gif_notes_the_first_frame():
    frames = [Image.fromarray(photo(64, 48)), Image.new("RGB", (64, 48))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = load_image(buf.getvalue())
    assert out.array.mean() > 10 and any("first frame" in n for n in out.notices)
