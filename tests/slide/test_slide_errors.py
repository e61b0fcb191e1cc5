"""Bad input gives a SlideError that names the file and says what is wrong."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from histoviewer.errors import SlideError
from histoviewer.slide import SUPPORTED_EXTENSIONS, file_dialog_filter, open_slide
from histoviewer.slide import synthetic as syn


def _refused(path, *words):
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message


def test_missing_file(tmp_path):
    _refused(tmp_path / "nothing.svs", "does not exist")


def test_folder(tmp_path):
    folder = tmp_path / "slides.tif"
    folder.mkdir()
    _refused(folder, "folder")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "report.docx"
    path.write_bytes(b"PK\x03\x04 not a slide")
    _refused(path, "'.docx' files are not supported", ".svs")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.svs"
    path.write_bytes(b"")
    _refused(path, "empty")


def test_random_bytes_and_text_are_not_images(tmp_path):
    noise = tmp_path / "noise.tif"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _refused(noise, "not a slide or image file")
    text = tmp_path / "notes.png"
    text.write_text("tumour margins look clear\n" * 20)
    _refused(text, "not a slide or image file")


def test_tiff_header_with_garbage_after(tmp_path):
    path = tmp_path / "fake.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 200)
    _refused(path, "not a valid TIFF file")
    _refused(path, "no readable image directory")


def test_png_header_with_garbage_after(tmp_path):
    path = tmp_path / "fake.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    _refused(path, "cannot be opened")


def test_truncated_tiff(tmp_path, he_image):
    path = syn.write_pyramid_tiff(tmp_path / "cut.tif", he_image, tile=64, compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    _refused(path, "damaged")


def test_truncated_strip_tiff(tmp_path, he_image):
    path = syn.write_strip_tiff(tmp_path / "cut.tif", he_image)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path, "damaged", "truncated")


def test_corrupt_tile_fails_on_read_not_with_a_raw_exception(tmp_path, he_image):
    path = syn.write_svs(tmp_path / "bad.svs", he_image, tile=64, label=False, macro=False)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\x13" * count  # tile 5 (row 1, column 0) destroyed
    path.write_bytes(bytes(data))
    with open_slide(path) as slide:
        slide.read_region(0, 64, 0, 64, 64)  # an intact tile still reads
        with pytest.raises(SlideError) as info:
            slide.read_region(0, 0, 64, 64, 64)
    assert str(path) in str(info.value) and "is damaged" in str(info.value)


def test_corrupt_png_fails_on_read(tmp_path, he_image):
    path = tmp_path / "bad.png"
    Image.fromarray(he_image).save(path)
    data = bytearray(path.read_bytes())
    data[200:400] = b"\x00" * 200
    path.write_bytes(bytes(data))
    with open_slide(path) as slide, pytest.raises(SlideError, match="damaged"):
        slide.read_region(0, 0, 0, 10, 10)


def test_zero_size_image(tmp_path):
    path = tmp_path / "zero.tif"
    tifffile.imwrite(path, np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        width_tag = tif.pages.first.tags["ImageWidth"]
        value_offset = width_tag.valueoffset
    data = bytearray(path.read_bytes())
    data[value_offset : value_offset + 2] = b"\x00\x00"  # ImageWidth is a SHORT here
    path.write_bytes(bytes(data))
    _refused(path, "empty (0 pixels)")


def test_unreadable_file(tmp_path, he_image, monkeypatch):
    import histoviewer.slide.opener as opener

    path = syn.write_strip_tiff(tmp_path / "locked.tif", he_image)

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "permission denied")

    # Tests run as root here, where chmod 0 would not stop reading.
    monkeypatch.setattr(opener, "open", no_permission, raising=False)
    _refused(path, "permission denied")


def test_file_dialog_filter_lists_every_extension():
    text = file_dialog_filter()
    assert text.endswith("All files (*)")
    for ext in SUPPORTED_EXTENSIONS:
        assert f"*{ext}" in text.split(";;")[0]
