"""Loading labelled tiles from folders and zips, and every broken layout."""

from __future__ import annotations

import csv
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_support import CLASS_FOLDERS, make_tiles, zip_folder

from histoviewer.errors import DatasetError
from histoviewer.training import list_tiles, load_tiles


def test_folder_gives_classes_labels_and_tiles_at_their_own_size(tiles: Path):
    ds = load_tiles(tiles, workers=2)
    assert ds.class_folders == list(CLASS_FOLDERS)
    assert ds.class_names == ["tumor", "stroma", "adipose"]
    # The 40 px tiles are kept at 40 px: resizing them would change their scale.
    assert ds.images.shape == (18, 40, 40, 3) and ds.images.dtype == np.uint8
    assert ds.patch_size == 40 and ds.tile_size == (40, 40) and ds.scale_factor == 1.0
    assert ds.size_counts == {"40 x 40": 18}
    assert ds.resized == [] and ds.notes == []
    assert ds.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert ds.stems[:2] == ["tile_000", "tile_001"]
    assert ds.skipped == []
    png = np.asarray(Image.open(tiles / CLASS_FOLDERS[0] / "tile_000.png").convert("RGB"))
    assert np.array_equal(ds.images[0], png)  # pixel for pixel
    assert ds.class_colors[0] != ds.class_colors[1]


def test_zip_with_wrapper_folder_gives_the_same_data(tmp_path: Path):
    folder = make_tiles(tmp_path / "plain")
    wrapped = make_tiles(tmp_path / "wrapped", wrapper="Kather_texture_2016_image_tiles_5000")
    archive = zip_folder(wrapped, tmp_path / "tiles.zip")
    a = load_tiles(folder)
    b = load_tiles(archive)
    c = load_tiles(wrapped)  # a wrapper folder on disk is accepted too
    for other in (b, c):
        assert other.class_folders == a.class_folders
        assert other.stems == a.stems
        assert np.array_equal(other.labels, a.labels)
        assert np.array_equal(other.images, a.images)
    assert b.skipped == []  # __MACOSX and .DS_Store are ignored, not reported


def test_a_patch_size_resizes_every_tile_and_names_the_odd_ones(tmp_path: Path, caplog):
    root = make_tiles(tmp_path / "t", per_class=3)
    Image.new("RGBA", (300, 200), (10, 200, 30, 255)).save(root / CLASS_FOLDERS[0] / "big.png")
    Image.new("L", (150, 150), 77).save(root / CLASS_FOLDERS[1] / "gray.png")
    ds = load_tiles(root, size=64)
    assert ds.images.shape == (11, 64, 64, 3)
    big = ds.images[ds.stems.index("big")]
    assert big[32, 32].tolist() == [10, 200, 30]
    assert ds.images[ds.stems.index("gray")][5, 5].tolist() == [77, 77, 77]
    # The scale is that of the 40 px tiles, most of them: 40 of their pixels per 64.
    assert ds.tile_size == (40, 40) and ds.scale_factor == pytest.approx(40 / 64)
    assert ds.size_counts == {"40 x 40": 9, "300 x 200": 1, "150 x 150": 1}
    assert len(ds.resized) == 11
    odd, every = ds.notes
    assert odd.startswith("2 of the 11 tiles differ from the 40 x 40 px of the others")
    assert "01_TUMOR/big.png (300 x 200 px), 02_STROMA/gray.png (150 x 150 px)" in odd
    assert every == "the 40 x 40 px tiles were resized to 64 x 64 px (the patch size chosen)"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("big.png (300 x 200 px)" in w for w in warnings)


def _odd_tiles(root: Path) -> Path:
    """40 px tiles, plus one 48 px and one 64 px tile in two classes."""
    make_tiles(root, per_class=4)
    Image.new("RGB", (48, 48), (150, 40, 110)).save(root / CLASS_FOLDERS[0] / "odd_a.png")
    Image.new("RGB", (64, 64), (235, 150, 190)).save(root / CLASS_FOLDERS[1] / "odd_b.png")
    return root


def test_tiles_of_mixed_sizes_are_refused_naming_them(tmp_path: Path):
    root = _odd_tiles(tmp_path / "mixed")
    archive = zip_folder(root, tmp_path / "mixed.zip")
    for source in (root, archive):
        with pytest.raises(DatasetError) as caught:
            load_tiles(source)
        message = str(caught.value)
        assert "not all one size: 2 of 14 differ from the 40 x 40 px of the others" in message
        assert "01_TUMOR/odd_a.png (48 x 48 px), 02_STROMA/odd_b.png (64 x 64 px)" in message
        assert "--patch-size N" in message and str(source) in message
    # Beyond three, the rest are counted.
    for i in range(3):
        Image.new("RGB", (50, 50), "white").save(root / CLASS_FOLDERS[2] / f"odd_{i}.png")
    with pytest.raises(
        DatasetError, match=r"5 of 17 differ .*odd_b\.png \(64 x 64 px\), .* and 2 more"
    ):
        load_tiles(root)


def test_non_square_tiles_are_refused_or_centre_cropped(tmp_path: Path):
    root = make_tiles(tmp_path / "t", per_class=3)
    wide = np.zeros((40, 60, 3), dtype=np.uint8)
    wide[:, 10:50] = (200, 30, 30)  # the centre square is red, the sides black
    Image.fromarray(wide).save(root / CLASS_FOLDERS[2] / "wide.png")
    with pytest.raises(
        DatasetError,
        match=r"1 of the 10 tiles in .* is not square, e\.g\. "
        r"07_ADIPOSE/wide\.png \(60 x 40 px\)",
    ):
        load_tiles(root)
    ds = load_tiles(root, size=40)
    # Centre-cropped, not squashed: no black from the sides, the tissue keeps its shape.
    assert (ds.images[ds.stems.index("wide")] == (200, 30, 30)).all()
    assert [Path(p).name for p in ds.resized] == ["wide.png"]


def test_limit_per_class_is_a_seeded_subset(tmp_path: Path):
    root = make_tiles(tmp_path / "t", per_class=10)
    a = load_tiles(root, limit_per_class=4, limit_seed=1)
    b = load_tiles(root, limit_per_class=4, limit_seed=1)
    c = load_tiles(root, limit_per_class=4, limit_seed=2)
    assert a.class_counts() == [4, 4, 4]
    assert a.stems == b.stems and a.stems != c.stems
    assert a.stems[:4] == sorted(a.stems[:4])  # still in canonical order


def test_missing_path_and_non_zip_file(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        list_tiles(tmp_path / "nowhere")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        list_tiles(text)


def test_no_class_folders_names_the_folder(tmp_path: Path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.new("RGB", (150, 150), "red").save(root / "a.png")
    with pytest.raises(DatasetError, match=r"no class folders found in .*flat"):
        list_tiles(root)
    with pytest.raises(DatasetError, match="no class folders"):
        list_tiles(zip_folder(root, tmp_path / "flat.zip"))


def test_empty_class_folder_is_named(tmp_path: Path):
    root = make_tiles(tmp_path / "t", per_class=3)
    (root / "04_LYMPHO").mkdir()
    (root / "04_LYMPHO" / "Thumbs.db").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"class folder .*04_LYMPHO holds no images"):
        list_tiles(root)
    # In a zip, an empty folder exists only as a directory entry.
    archive = zip_folder(root, tmp_path / "t.zip")
    with pytest.raises(DatasetError, match=r"t\.zip:04_LYMPHO holds no images"):
        list_tiles(archive)


def test_single_class_is_refused(tmp_path: Path):
    root = make_tiles(tmp_path / "one", per_class=3, folders=("01_TUMOR",))
    with pytest.raises(DatasetError, match=r"only one class folder \(01_TUMOR\).*at least two"):
        list_tiles(root)


def test_a_bad_file_among_good_ones_is_skipped_and_reported(tmp_path: Path, caplog):
    root = make_tiles(tmp_path / "t", per_class=4)
    (root / CLASS_FOLDERS[1] / "x.png").write_bytes(b"this is not a png")
    (root / CLASS_FOLDERS[2] / "readme.txt").write_text("notes")
    ds = load_tiles(root)
    assert ds.class_counts() == [4, 4, 4]
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert set(reasons) == {"x.png", "readme.txt"}
    assert "not a readable image" in reasons["x.png"]
    assert reasons["readme.txt"] == "not an image file"
    assert any("x.png" in r.getMessage() for r in caplog.records)


def test_a_class_of_unreadable_files_names_the_folder(tmp_path: Path):
    root = make_tiles(tmp_path / "t", per_class=3)
    bad = root / CLASS_FOLDERS[2]
    for f in bad.iterdir():
        f.write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match=r"none of the 3 files in the class folder .*07_ADIPOSE"):
        load_tiles(root)


def test_truncated_zip_member_is_skipped(tmp_path: Path):
    root = make_tiles(tmp_path / "t", per_class=3)
    archive = zip_folder(root, tmp_path / "t.zip", junk=False)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(
            f"{CLASS_FOLDERS[0]}/cut.png",
            (root / CLASS_FOLDERS[0] / "tile_000.png").read_bytes()[:60],
        )
    ds = load_tiles(archive)
    assert ds.class_counts() == [3, 3, 3]
    assert [Path(s.path.split(":")[-1]).name for s in ds.skipped] == ["cut.png"]


def test_two_folders_naming_one_class(tmp_path: Path):
    root = make_tiles(tmp_path / "t", per_class=3, folders=("01_TUMOR", "tumor", "02_STROMA"))
    with pytest.raises(DatasetError, match="both name the class 'tumor'"):
        list_tiles(root)


def test_lossless_kather_tiles_decode_pixel_exact(kather_dir):
    manifest = {}
    with open(Path(kather_dir) / "MANIFEST.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            manifest[(row["class"], row["original_file"].removesuffix(".tif"))] = row
    ds = load_tiles(Path(kather_dir) / "tiles", limit_per_class=2)
    assert ds.class_counts() == [2] * 8 and ds.class_names[0] == "tumor"
    for image, label, stem in zip(ds.images, ds.labels, ds.stems, strict=True):
        row = manifest[(ds.class_folders[label], stem)]
        assert hashlib.sha256(image.tobytes()).hexdigest() == row["rgb_pixels_sha256"]


def _add_zeros_member(archive: Path, name: str, size: int) -> None:
    """Append a member of ``size`` zero bytes, streamed (deflated to about size / 1000)."""
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w") as fh:
        for start in range(0, size, len(chunk)):
            fh.write(chunk[: min(len(chunk), size - start)])


def _claim_size(archive: Path, name: str, size: int) -> None:
    """Make the central directory say member ``name`` holds ``size`` bytes uncompressed
    (what zipfile reads as ZipInfo.file_size): a header that lies, cheaply."""
    data = bytearray(archive.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + length].decode() == name:
            data[at + 24 : at + 28] = size.to_bytes(4, "little")
            archive.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{name} is not in {archive}")


def test_a_zip_member_too_large_for_a_tile_is_left_out_unread(tmp_path: Path):
    import tracemalloc

    from histoviewer.training.dataset import MAX_TILE_BYTES

    root = make_tiles(tmp_path / "t", per_class=3)
    archive = zip_folder(root, tmp_path / "t.zip", junk=False)
    # 65 MiB of zeros: 66 KB in the zip, just past the limit of 64 MiB.
    _add_zeros_member(archive, f"{CLASS_FOLDERS[0]}/huge.png", MAX_TILE_BYTES + (1 << 20))
    assert archive.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        ds = load_tiles(archive, workers=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024  # the member was never read
    assert ds.class_counts() == [3, 3, 3]
    (skipped,) = ds.skipped
    assert skipped.path == f"{archive}:{CLASS_FOLDERS[0]}/huge.png"
    assert skipped.reason == (
        "larger than 64.0 MB (65.0 MB), too large for a tile (a whole slide?); left out unread"
    )
    assert ds.notes == [
        f"1 file was larger than 64.0 MB, too large for a tile, and left out unread: "
        f"{CLASS_FOLDERS[0]}/huge.png"
    ]


def test_a_zip_member_whose_header_claims_2_gib_is_not_read(tmp_path: Path, monkeypatch):
    root = make_tiles(tmp_path / "t", per_class=3)
    archive = zip_folder(root, tmp_path / "t.zip", junk=False)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(f"{CLASS_FOLDERS[1]}/bomb.tif", b"small, but the header says 2 GiB")
    _claim_size(archive, f"{CLASS_FOLDERS[1]}/bomb.tif", 2**31)
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile,
        "open",
        lambda self, name, *a, **k: (
            opened.append(getattr(name, "filename", name)) or real_open(self, name, *a, **k)
        ),
    )
    ds = load_tiles(archive, workers=1)
    assert f"{CLASS_FOLDERS[1]}/bomb.tif" not in opened and len(opened) == 2 * 9
    assert ds.class_counts() == [3, 3, 3]
    (skipped,) = ds.skipped
    assert "larger than 64.0 MB (2.0 GB), too large for a tile" in skipped.reason


def test_a_large_file_in_a_folder_is_left_out_too(tmp_path: Path, monkeypatch):
    from histoviewer.training import dataset

    monkeypatch.setattr(dataset, "MAX_TILE_BYTES", 64 * 1024)
    root = make_tiles(tmp_path / "t", per_class=3)
    # A readable tile with 100 KB of trailing bytes (PNG readers ignore them).
    big = root / CLASS_FOLDERS[2] / "padded.png"
    big.write_bytes((root / CLASS_FOLDERS[2] / "tile_000.png").read_bytes() + bytes(100_000))
    ds = load_tiles(root)
    assert ds.class_counts() == [3, 3, 3]
    (skipped,) = ds.skipped
    assert Path(skipped.path) == big
    assert (
        skipped.reason.startswith("larger than 64.0 KB (10") and "left out unread" in skipped.reason
    )


def test_no_read_goes_past_the_limit_whatever_a_header_says(monkeypatch):
    import io

    from histoviewer.training import dataset

    monkeypatch.setattr(dataset, "MAX_TILE_BYTES", 1000)
    requested = []

    class Endless(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            requested.append(len(buffer))
            buffer[:] = bytes(len(buffer))
            return len(buffer)

    with pytest.raises(dataset._TooLarge):
        dataset._read_bounded(Endless())
    assert sum(requested) <= 1001
    assert dataset._read_bounded(io.BytesIO(bytes(1000))) == bytes(1000)
