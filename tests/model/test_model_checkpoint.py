import dataclasses
import json
import os
import pickle
import struct

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision

from histoviewer.errors import ModelError, StorageError
from histoviewer.model import (
    Classifier,
    ModelInfo,
    build_network,
    load_model,
    save_model,
)


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_fp32_round_trip_is_exact(tmp_path, small_net, small_info, tiles):
    before = Classifier.from_network(small_net, small_info)
    path = save_model(tmp_path / "m.safetensors", small_net, small_info)
    after = load_model(path)
    assert after.info == small_info
    assert after.fingerprint == before.fingerprint
    np.testing.assert_array_equal(after.predict_proba(tiles), before.predict_proba(tiles))
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temporary file left behind


def test_fp16_round_trip_is_close_and_float32(tmp_path, small_net, small_info, tiles):
    full = save_model(tmp_path / "full.safetensors", small_net, small_info)
    half = save_model(tmp_path / "half.safetensors", small_net, small_info, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored = safetensors.torch.load_file(half)
    assert stored["fc.weight"].dtype == torch.float16
    assert stored["bn1.num_batches_tracked"].dtype == torch.int64
    loaded = load_model(half)
    assert loaded.info == small_info
    assert all(
        p.dtype == torch.float32
        for p in loaded.network.state_dict().values()
        if p.is_floating_point()
    )
    ref = Classifier.from_network(small_net, small_info).predict_proba(tiles)
    got = loaded.predict_proba(tiles)
    assert np.abs(got - ref).max() < 2e-3
    assert not np.array_equal(got, ref)  # really stored at lower precision
    # The fingerprint is that of the fp16 weights, and stable across further loads.
    assert load_model(half).fingerprint == loaded.fingerprint


def test_metadata_is_json_in_the_header(tmp_path, small_net, small_info):
    path = save_model(tmp_path / "m.safetensors", small_net, small_info)
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert ModelInfo.from_json(header["__metadata__"]["histoviewer"]) == small_info


def test_model_folder_layout(tmp_path, small_net, small_info, tiles):
    folder = tmp_path / "models" / "kather-resnet"
    save_model(folder / "model.safetensors", small_net, small_info, half=True)
    (folder / "report.md").write_text("test report")
    assert load_model(folder).info.name == "tiny"
    with pytest.raises(ModelError, match=r"the model folder .*empty.* holds no model.safetensors"):
        (tmp_path / "empty").mkdir()
        load_model(tmp_path / "empty")


def test_training_checkpoint_with_optimizer_state(tmp_path, small_net, small_info, tiles):
    optimizer = torch.optim.Adam(small_net.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    small_net.train()
    optimizer.zero_grad()
    small_net(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    small_net.eval()
    path = tmp_path / "last.pt"
    torch.save(
        {
            "model": small_net.state_dict(),
            "info": small_info.to_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": 3,
            "config": {"lr": 1e-3, "batch_size": 64},
        },
        path,
    )
    clf = load_model(path)
    assert clf.info == small_info
    ref = Classifier.from_network(small_net, small_info).predict_proba(tiles)
    np.testing.assert_array_equal(clf.predict_proba(tiles), ref)


def test_recipe_checkpoint_resnet50_with_dataparallel_prefix(tmp_path, tiles):
    torch.manual_seed(3)
    net = torchvision.models.resnet50(weights=None)
    net.fc = torch.nn.Linear(2048, 8)
    net.eval()
    path = tmp_path / "best_model.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    clf = load_model(path)
    assert clf.info.arch == "resnet50"
    assert clf.info.class_names == ModelInfo.recipe().class_names
    assert clf.info.input_size == 224 and clf.info.mean == (0.485, 0.456, 0.406)
    assert clf.info.name == "best_model"
    ref = Classifier.from_network(net, ModelInfo.recipe()).predict_proba(tiles[:2])
    np.testing.assert_allclose(clf.predict_proba(tiles[:2]), ref, atol=1e-6)


def test_bare_state_dict_and_plain_safetensors_get_recipe_info(tmp_path, small_net, tiles):
    torch.save(small_net.state_dict(), tmp_path / "weights.pt")
    safetensors.torch.save_file(_state(small_net), tmp_path / "plain.safetensors")
    for name in ("weights.pt", "plain.safetensors"):
        clf = load_model(tmp_path / name)
        assert clf.info.arch == "resnet18"
        assert clf.info.training["metadata"] == "assumed (recipe)"


# --- files that must be refused ---------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r"the model file .*nope\.pt: it does not exist"):
        load_model(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01" + os.urandom(4095), "is not a model checkpoint"),  # not \x80: a pickle
        (b"\x89PNG\r\n\x1a\n" + os.urandom(200), "is not a model checkpoint .it is a PNG image"),
        (b"", "is empty"),
    ],
)
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "model.pth.tar"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        load_model(path)


@pytest.mark.parametrize("fraction", [0.5, 0.999])
@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_truncated_files(tmp_path, small_net, small_info, kind, fraction):
    path = tmp_path / ("m.safetensors" if kind == "safetensors" else "m.pth.tar")
    if kind == "safetensors":
        save_model(path, small_net, small_info)
    else:
        legacy = {"_use_new_zipfile_serialization": False} if kind == "legacy" else {}
        torch.save({"state_dict": small_net.state_dict()}, path, **legacy)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError, match=r"m\.(pth\.tar|safetensors) is damaged or incomplete"):
        load_model(path)


class _Payload:
    """Unpickling this would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "torch-legacy", "pickle"])
def test_malicious_pickle_runs_nothing(tmp_path, writer, recwarn):
    marker = tmp_path / "pwned"
    payload = {"state_dict": {"conv1.weight": _Payload(marker)}}
    path = tmp_path / "evil.pth.tar"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch")
    assert not marker.exists()
    with pytest.raises(ModelError, match=r"evil\.pth\.tar refused: it contains code .* could run"):
        load_model(path)
    assert not marker.exists()
    # torch warns about the raw pickle's protocol; that line is not the user's business.
    assert not [w for w in recwarn if "pickle" in str(w.message)]


def test_a_pytorch_checkpoint_named_safetensors_is_read_as_what_it_is(tmp_path, small_net):
    path = tmp_path / "misnamed.safetensors"
    torch.save({"state_dict": small_net.state_dict()}, path)
    classifier = load_model(path)
    assert classifier.info.arch == "resnet18"
    weights = classifier.network.state_dict()["fc.weight"]
    assert torch.equal(weights.float().cpu(), small_net.state_dict()["fc.weight"].float())


def test_a_symbolic_link_loop_is_named_as_such(tmp_path):
    loop = tmp_path / "model.safetensors"
    loop.symlink_to(tmp_path / "other.safetensors")
    (tmp_path / "other.safetensors").symlink_to(loop)
    with pytest.raises(ModelError, match=r"model\.safetensors: it is a symbolic link loop"):
        load_model(loop)
    dangling = tmp_path / "gone.pt"
    dangling.symlink_to(tmp_path / "moved-away.pt")
    with pytest.raises(ModelError, match=r"broken symbolic link \(to .*moved-away\.pt"):
        load_model(dangling)


def test_recipe_checkpoint_with_another_head_size(tmp_path):
    net = build_network("resnet18", 10)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "ten.pth.tar")
    with pytest.raises(ModelError, match="has 10 outputs but 8 classes are expected"):
        load_model(tmp_path / "ten.pth.tar")


def test_metadata_class_count_must_match_the_head(tmp_path, small_net, small_info):
    five = dataclasses.replace(small_info, class_names=["a", "b", "c", "d", "e"], class_colors=[])
    torch.save({"model": small_net.state_dict(), "info": five.to_dict()}, tmp_path / "last.pt")
    with pytest.raises(ModelError, match="has 8 outputs but 5 classes are declared"):
        load_model(tmp_path / "last.pt")
    with pytest.raises(ModelError, match="has 8 outputs but 5 classes are declared"):
        save_model(tmp_path / "m.safetensors", small_net, five)
    assert not (tmp_path / "m.safetensors").exists()


def test_weights_of_another_architecture(tmp_path, small_net, small_info):
    labelled = dataclasses.replace(small_info, arch="resnet50")
    torch.save({"model": small_net.state_dict(), "info": labelled.to_dict()}, tmp_path / "l.pt")
    with pytest.raises(ModelError, match="labelled resnet50, but its weights look like a resnet18"):
        load_model(tmp_path / "l.pt")


def test_weights_of_an_unsupported_resnet(tmp_path):
    with torch.device("meta"):
        keys = list(torchvision.models.resnet152().state_dict())
    torch.save({"state_dict": {k: torch.zeros(1) for k in keys}}, tmp_path / "big.pth.tar")
    with pytest.raises(ModelError, match=r"look like a resnet152 \(supported: resnet18"):
        load_model(tmp_path / "big.pth.tar")


def test_weights_that_are_no_resnet(tmp_path):
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 8))
    torch.save({"state_dict": mlp.state_dict()}, tmp_path / "mlp.pth.tar")
    with pytest.raises(ModelError, match=r"not look like a torchvision ResNet \(keys such as 0\."):
        load_model(tmp_path / "mlp.pth.tar")


def test_resnet_keys_with_wrong_shapes(tmp_path, small_net):
    state = _state(small_net)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save({"state_dict": state}, tmp_path / "odd.pth.tar")
    with pytest.raises(ModelError, match=r"odd\.pth\.tar does not fit a resnet18: .*size mismatch"):
        load_model(tmp_path / "odd.pth.tar")


def test_no_weights_inside(tmp_path):
    torch.save({"epoch": 3, "config": {}}, tmp_path / "cfg.pt")
    with pytest.raises(ModelError, match="does not hold model weights"):
        load_model(tmp_path / "cfg.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="holds a list, not model weights"):
        load_model(tmp_path / "list.pt")


def test_bad_metadata_in_a_safetensors_file(tmp_path, small_net):
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file(_state(small_net), path, metadata={"histoviewer": "{oops"})
    with pytest.raises(ModelError, match=r"the metadata in .*m\.safetensors is unusable: .*JSON"):
        load_model(path)
    bad = ModelInfo.recipe("resnet18").to_dict()
    bad["mpp"] = -1
    safetensors.torch.save_file(_state(small_net), path, metadata={"histoviewer": json.dumps(bad)})
    with pytest.raises(ModelError, match="field 'mpp'"):
        load_model(path)


def test_unwritable_target_is_a_storage_error(tmp_path, small_net, small_info):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot write"):
        save_model(tmp_path / "file" / "m.safetensors", small_net, small_info)
