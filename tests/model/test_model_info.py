import dataclasses
import json

import pytest

from histoviewer.classes import class_colors, class_names
from histoviewer.errors import ModelError
from histoviewer.model import FORMAT_VERSION, ModelInfo, model_info_summary


def test_recipe_has_the_recipe_settings():
    info = ModelInfo.recipe()
    assert info.arch == "resnet50"
    assert info.class_names == class_names()
    assert info.class_names[0] == "tumor" and info.class_names[-1] == "empty"
    assert info.class_colors == class_colors()
    assert info.input_size == 224 and info.patch_size == 150 and info.mpp == 0.495
    assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    assert info.num_classes == 8
    assert info.patch_microns == pytest.approx(74.25)
    assert info.format_version == FORMAT_VERSION


def test_round_trip_through_json_is_equal(small_info):
    text = json.dumps(small_info.to_dict())
    back = ModelInfo.from_dict(json.loads(text))
    assert back == small_info
    assert ModelInfo.from_json(small_info.to_json()) == small_info
    assert isinstance(back.class_colors[0], tuple)


def test_missing_colours_are_filled_from_classes_json():
    info = ModelInfo(arch="resnet18", class_names=["stroma", "my_new_class"])
    assert info.class_colors[0] == (238, 221, 136)
    assert len(info.class_colors) == 2


def test_missing_optional_fields_take_recipe_defaults():
    info = ModelInfo.from_dict({"arch": "resnet34", "class_names": ["a", "b", "c"]})
    assert info.input_size == 224 and info.mpp == 0.495 and info.std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"arch": "vgg16"}, "arch"),
        ({"class_names": ["tumor"]}, "class_names"),
        ({"class_names": ["a", "a"]}, "class_names"),
        ({"class_colors": [[1, 2, 3]]}, "class_colors"),
        ({"class_colors": [[1, 2, 300]] * 8}, "class_colors"),
        ({"input_size": "224"}, "input_size"),
        ({"input_size": 0}, "input_size"),
        ({"mean": [0.5, 0.5]}, "mean"),
        ({"std": [0.2, 0.0, 0.2]}, "std"),
        ({"patch_size": -150}, "patch_size"),
        ({"mpp": 0}, "mpp"),
        ({"mpp": float("nan")}, "mpp"),
        ({"name": 3}, "name"),
        ({"training": ["epochs", 3]}, "training"),
        ({"metrics": None}, "metrics"),
        ({"format_version": True}, "format_version"),
    ],
)
def test_bad_metadata_names_the_field(change, field):
    data = ModelInfo.recipe().to_dict()
    data.update(change)
    with pytest.raises(ModelError, match=f"'{field}'"):
        ModelInfo.from_dict(data)


@pytest.mark.parametrize("missing", ["arch", "class_names"])
def test_required_fields(missing):
    data = ModelInfo.recipe().to_dict()
    del data[missing]
    with pytest.raises(ModelError, match=f"required field '{missing}'"):
        ModelInfo.from_dict(data)


def test_not_an_object_and_not_json():
    with pytest.raises(ModelError, match="JSON object"):
        ModelInfo.from_dict(["resnet50"])
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelInfo.from_json("{arch: resnet50")


def test_newer_format_is_refused_with_advice():
    data = ModelInfo.recipe().to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ModelError, match="update HistoViewer"):
        ModelInfo.from_dict(data)


def test_replace_validates_again():
    with pytest.raises(ModelError, match="'mpp'"):
        dataclasses.replace(ModelInfo.recipe(), mpp=-1.0)


def test_summary_lists_what_the_user_must_know(small_info):
    text = model_info_summary(small_info)
    assert "Model: tiny" in text
    assert "ResNet-18" in text
    assert "Classes (8): tumor (Tumour epithelium), stroma" in text
    assert "150 px at 0.495 µm/px (74.2 µm)" in text
    assert "32 x 32" in text
    assert "dataset kather2016" in text and "epochs 2" in text
    assert "accuracy 0.5" in text and "macro_f1 0.25" in text
    assert "Training: not recorded" in model_info_summary(ModelInfo.recipe())


def test_kather_classes_take_todays_colours_and_custom_classes_keep_theirs():
    # A model written before the palette changed records the old colours.
    info = ModelInfo.from_dict(
        {
            "arch": "resnet18",
            "class_names": ["tumor", "my_new_class"],
            "class_colors": [[213, 94, 0], [1, 2, 3]],
        }
    )
    assert info.class_colors == [(220, 20, 20), (1, 2, 3)]
