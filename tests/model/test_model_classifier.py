import numpy as np
import pytest
import torch

from histoviewer.errors import ModelError
from histoviewer.model import Classifier, ModelInfo, build_network, preprocess, weights_fingerprint


def test_predict_proba_is_the_softmax_of_the_network(small_net, small_info, tiles):
    clf = Classifier.from_network(small_net, small_info)
    probs = clf.predict_proba(tiles)
    assert probs.shape == (4, 8) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        x = preprocess(torch.from_numpy(tiles), small_info, channels_last=False)
        expected = torch.softmax(small_net(x), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert not clf.network.training


def test_empty_batch_and_bad_input(small_net, small_info):
    clf = Classifier.from_network(small_net, small_info)
    assert clf.predict_proba(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 8)
    with pytest.raises(ValueError, match="uint8"):
        clf.predict_proba(np.zeros((1, 150, 150, 3), np.float32))


def test_head_must_match_the_declared_classes(small_info):
    with pytest.raises(ModelError, match="has 5 outputs but 8 classes"):
        Classifier.from_network(build_network("resnet18", 5), small_info)


def test_fingerprint_identifies_the_weights(small_net, small_info):
    clf = Classifier.from_network(small_net, small_info)
    assert len(clf.fingerprint) == 64 and int(clf.fingerprint, 16) >= 0
    # Independent of storage precision for values exactly representable in both.
    state = small_net.state_dict()
    halved = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    rounded = {k: v.float() if v.is_floating_point() else v for k, v in halved.items()}
    assert weights_fingerprint(halved) == weights_fingerprint(rounded)
    other = build_network("resnet18", 8)
    assert Classifier.from_network(other, small_info).fingerprint != clf.fingerprint
    with torch.no_grad():
        small_net.fc.bias[0] += 1e-3
    assert weights_fingerprint(small_net.state_dict()) != clf.fingerprint


def test_identity_names_model_and_weights(small_net, small_info):
    clf = Classifier.from_network(small_net, small_info)
    ident = clf.identity()
    assert ident["fingerprint"] == clf.fingerprint
    assert ident["class_names"] == small_info.class_names
    assert ident["arch"] == "resnet18" and ident["name"] == "tiny"
    assert ident["patch_size"] == 150 and ident["mpp"] == 0.495


def test_autocast_stays_close_to_float32(small_net, small_info, tiles):
    clf = Classifier.from_network(small_net, ModelInfo.recipe("resnet18", input_size=32))
    fp32 = clf.probabilities(torch.from_numpy(tiles))
    bf16 = clf.probabilities(torch.from_numpy(tiles), autocast_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    assert (fp32 - bf16).abs().max() < 0.05
