"""Patch labels as QuPath GeoJSON annotations: out, in, and what is refused."""

import gzip

import pytest

from histoviewer.labels import LabelError, LabelSet
from histoviewer.labels.geojson import (
    labels_from_geojson,
    labels_geojson,
    read_geojson,
    write_labels_geojson,
)

NAMES = ["tumor", "stroma", "empty"]


def square(x, y, side):
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]


def feature(ring, name, holes=(), object_type="annotation"):
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring, *holes]},
        "properties": {"objectType": object_type, "classification": {"name": name}},
    }


def test_labels_round_trip_through_qupath_geojson(tmp_path):
    labels = LabelSet({"path": "/s.svs"}, colors={"tumor": (213, 94, 0)})
    labels.set([(0, 0, 40), (40, 0, 40), (200, 120, 40)], "tumor")
    labels.set([(80, 40, 40)], "stroma")
    data = labels_geojson(labels)
    first = data["features"][0]
    assert first["properties"]["objectType"] == "annotation"
    assert first["properties"]["classification"] == {"name": "tumor", "color": [213, 94, 0]}
    assert first["geometry"]["coordinates"] == [square(0, 0, 40)]
    for name in ("labels.geojson", "labels.geojson.gz"):
        write_labels_geojson(labels, tmp_path / name)
        back = labels_from_geojson(read_geojson(tmp_path / name), patch_size=40, class_names=NAMES)
        assert [(lab.box, lab.name) for lab in back.labels] == [
            (lab.box, lab.name) for lab in labels
        ]
    assert gzip.decompress((tmp_path / "labels.geojson.gz").read_bytes())[:1] == b"{"


def test_a_qupath_polygon_is_tiled_with_patches_whose_centre_is_inside():
    # A 100 x 80 rectangle with a 40 x 40 hole at (40, 40), on a 20 px patch grid.
    ring = [[0, 0], [100, 0], [100, 80], [0, 80], [0, 0]]
    hole = square(40, 40, 40)
    data = [feature(ring, "Tumor", holes=[hole]), feature(square(500, 500, 5), "stroma")]
    out = labels_from_geojson(data, patch_size=20, class_names=NAMES, slide_size=(400, 400))
    boxes = {lab.box for lab in out.labels}
    assert len(boxes) == 5 * 4 - 4  # 20 cells, 4 in the hole
    assert (40, 40, 20) not in boxes and (0, 60, 20) in boxes
    assert {lab.name for lab in out.labels} == {"tumor"}
    assert out.empty_shapes == 1  # the 5 px square off the slide holds no patch


def test_unclassified_and_non_polygon_features_are_counted_and_skipped():
    data = {
        "type": "FeatureCollection",
        "features": [
            feature(square(0, 0, 20), "stroma"),
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square(0, 0, 20)]}},
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [5, 5]},
                "properties": {"classification": {"name": "tumor"}},
            },
        ],
    }
    out = labels_from_geojson(data, patch_size=20, class_names=NAMES)
    assert [lab.box for lab in out.labels] == [(0, 0, 20)]
    assert (out.skipped_unclassified, out.skipped_shapes) == (1, 1)
    assert "1 without a class skipped" in out.summary()


def test_unknown_classes_are_refused_by_name():
    data = [feature(square(0, 0, 20), "Necrosis"), feature(square(20, 0, 20), "Necrosis")]
    with pytest.raises(LabelError, match=r"'Necrosis' \(2\).*tumor, stroma, empty"):
        labels_from_geojson(data, patch_size=20, class_names=NAMES, where="x.geojson")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not json", "not GeoJSON"), (b'{"type": "Point"}', "not GeoJSON"), (b"[]", "no annot")],
)
def test_bad_files_get_a_clear_message(tmp_path, content, message):
    path = tmp_path / "bad.geojson"
    path.write_bytes(content)
    with pytest.raises(LabelError, match=message):
        labels_from_geojson(read_geojson(path), patch_size=20, class_names=NAMES)
    with pytest.raises(LabelError, match="does not exist"):
        read_geojson(tmp_path / "missing.geojson")
