import socket
import urllib.request

import pytest
import torch
import torchvision

from histoviewer.errors import ModelError
from histoviewer.model import ARCHITECTURES, arch_from_keys, build_network


def _meta_keys(arch: str) -> list[str]:
    # Building on the meta device gives the keys without allocating any weights.
    with torch.device("meta"):
        return list(getattr(torchvision.models, arch)().state_dict())


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("build_network tried to reach the network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_build_network_replaces_the_head_and_never_downloads(no_network, arch):
    net = build_network(arch, 8)
    assert isinstance(net.fc, torch.nn.Linear)
    assert net.fc.out_features == 8
    assert net.fc.in_features == (512 if arch == "resnet18" else 2048)
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 8)


def test_every_architecture_builds_without_download(no_network):
    # On the meta device the constructors run fully but allocate nothing.
    with torch.device("meta"):
        for arch in ARCHITECTURES:
            assert build_network(arch, 3).fc.out_features == 3


def test_unknown_architecture_and_bad_class_count():
    with pytest.raises(ModelError, match="unknown model architecture 'vgg16'"):
        build_network("vgg16", 8)
    with pytest.raises(ModelError, match="at least 2 classes"):
        build_network("resnet18", 1)


@pytest.mark.parametrize("arch", [*ARCHITECTURES, "resnet152"])
def test_architecture_is_recognised_from_its_keys(arch):
    assert arch_from_keys(_meta_keys(arch)) == arch


def test_non_resnet_keys_are_not_recognised():
    assert arch_from_keys(["0.weight", "0.bias", "2.weight"]) is None
    keys = _meta_keys("resnet50")
    assert arch_from_keys([k for k in keys if not k.startswith("layer3.5.")]) is None
