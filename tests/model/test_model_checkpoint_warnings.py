"""Loading pickled checkpoints says nothing about pickle protocols, and stays weights-only."""

from __future__ import annotations

import warnings

import pytest
import torch

from histoviewer.errors import ModelError
from histoviewer.model import checkpoint as checkpoint_module
from histoviewer.model import load_model
from histoviewer.model.checkpoint import load_pickled

PROTOCOL_WARNING = "Detected pickle protocol"


def _save_recipe(path, net, *, protocol: int, zipfile: bool):
    torch.save(
        {"state_dict": net.state_dict(), "epoch": 30},
        path,
        pickle_protocol=protocol,
        _use_new_zipfile_serialization=zipfile,
    )
    return path


def _warnings_of(fn, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args)
    return result, [str(w.message) for w in caught]


@pytest.mark.parametrize("zipfile", [False, True], ids=["legacy", "zip"])
def test_a_recipe_checkpoint_of_another_pickle_protocol_loads_silently(
    tmp_path, small_net, zipfile
):
    path = _save_recipe(tmp_path / "best_model.pth.tar", small_net, protocol=3, zipfile=zipfile)
    # The file does make torch's weights-only loader warn...
    _, raw = _warnings_of(lambda: torch.load(path, weights_only=True))
    assert any(PROTOCOL_WARNING in m for m in raw)
    # ...but loading it as a model prints nothing.
    clf, caught = _warnings_of(load_model, path)
    assert caught == []
    assert clf.num_classes == 8
    key = "fc.weight"
    assert torch.equal(clf.network.state_dict()[key].cpu(), small_net.state_dict()[key])


def test_a_protocol_4_checkpoint_warns_nothing_either(tmp_path, small_net):
    # Protocol 4 frames its pickles, which torch's weights-only loader does not read:
    # the load fails (with its own message), and the warning before it stays quiet.
    path = _save_recipe(tmp_path / "p4.pth.tar", small_net, protocol=4, zipfile=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelError):
            load_model(path)
    assert [str(w.message) for w in caught] == []


def test_only_the_protocol_warning_is_silenced_and_the_load_stays_weights_only(
    tmp_path, small_net, monkeypatch
):
    path = _save_recipe(tmp_path / "model.pth.tar", small_net, protocol=3, zipfile=False)
    real_load = torch.load
    calls = []

    def load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        warnings.warn("something else torch has to say", UserWarning, stacklevel=2)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", load)
    obj, caught = _warnings_of(load_pickled, path)
    assert set(obj) == {"state_dict", "epoch"}
    assert calls == [True]
    assert caught == ["something else torch has to say"]
