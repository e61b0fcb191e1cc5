"""Resuming under a learning-rate schedule that changes every epoch, and extending a run.

A resumed run must follow the same rates, batch by batch, as one trained without a
break, and end with the same weights; a run extended to more epochs must follow, from
the resume point on, the rates of a run planned that long from the start.
"""

from __future__ import annotations

import json

import pytest
import torch
from training_support import tiny_config

from histoviewer import cli
from histoviewer.errors import HistoViewerError
from histoviewer.tasks import CancelToken
from histoviewer.training import engine as engine_module
from histoviewer.training import fit
from histoviewer.training.engine import make_scheduler

# 75 tiles: 60 to train on in batches of 20.
STEPS_PER_EPOCH = 3
SCHEDULES = {
    # Warm-up through epoch 1, then a cosine down to a tenth: a new rate every batch.
    "cosine": dict(scheduler="cosine", warmup_epochs=1, min_lr_ratio=0.1, lr=2e-3),
    # Halved after every epoch.
    "step": dict(scheduler="step", step_size=1, gamma=0.5),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def every_batch_reported(monkeypatch):
    """Every batch reports its progress (with the rate after its step), not 4 a second."""
    monkeypatch.setattr(engine_module, "REPORT_INTERVAL_S", 0.0)


def _batch_rates(events) -> dict[tuple[int, int], float]:
    """(epoch, batch) -> the learning rate after that training batch."""
    return {(e.epoch, e.batch): e.lr for e in events if e.kind == "batch" and e.phase == "train"}


def _planned_rates(config) -> list[float]:
    """The rate at every scheduler step of a run of ``config.epochs`` epochs from the start."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=config.lr)
    scheduler = make_scheduler(config, optimizer, STEPS_PER_EPOCH)
    per_epoch = config.scheduler == "step"
    steps = config.epochs * (1 if per_epoch else STEPS_PER_EPOCH)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_a_run_resumed_mid_schedule_ends_like_an_uninterrupted_one(train_data, tmp_path, schedule):
    settings = {**SCHEDULES[schedule], "epochs": 2}
    whole_events = []
    whole = fit(tiny_config(train_data, tmp_path / "whole", **settings), whole_events.append)

    out = tmp_path / "broken"
    cancel = CancelToken()
    events = []

    def stop_in_epoch_two(event):
        events.append(event)
        if event.kind == "batch" and event.epoch == 2 and event.batch == 1:
            cancel.cancel()

    stopped = fit(tiny_config(train_data, out, **settings), stop_in_epoch_two, cancel)
    assert stopped.cancelled and stopped.epochs_done == 1
    events = [e for e in events if not (e.kind == "batch" and e.epoch == 2)]  # undone
    resumed = fit(tiny_config(train_data, out, **settings), events.append, resume=True)

    rates = [h["lr"] for h in resumed.history]
    assert rates == [h["lr"] for h in whole.history]
    assert len(set(rates)) == 2  # the rate changes every epoch: the test can see a slip
    batches = _batch_rates(events)
    assert len(batches) == 2 * STEPS_PER_EPOCH
    assert batches == _batch_rates(whole_events)
    mine = torch.load(out / "last.pt", weights_only=True)
    theirs = torch.load(whole.last_path, weights_only=True)
    assert (
        mine["optimizer"]["param_groups"][0]["lr"] == theirs["optimizer"]["param_groups"][0]["lr"]
    )
    for key, value in theirs["model"].items():
        assert torch.allclose(mine["model"][key].float(), value.float(), atol=1e-6), key
    for a, b in zip(resumed.history, whole.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_more_epochs_extend_a_run_on_the_schedule_of_the_new_length(train_data, tmp_path, capsys):
    settings = SCHEDULES["cosine"]
    out = tmp_path / "run"
    first = fit(tiny_config(train_data, out, epochs=2, **settings))
    assert (out / "report.json").is_file()
    planned_2 = _planned_rates(tiny_config(train_data, out, epochs=2, **settings))
    planned_3 = _planned_rates(tiny_config(train_data, out, epochs=3, **settings))
    assert [h["lr"] for h in first.history] == [planned_2[0], planned_2[STEPS_PER_EPOCH]]
    # The longer cosine has other rates after the resume point: the test can tell them apart.
    assert planned_3[2 * STEPS_PER_EPOCH] > 1.5 * planned_2[2 * STEPS_PER_EPOCH]

    events = []
    longer = fit(tiny_config(train_data, out, epochs=3, **settings), events.append, resume=True)
    assert not longer.cancelled and longer.epochs_done == 3
    assert longer.extensions == [{"from_epochs": 2, "to_epochs": 3, "after_epoch": 2}]
    # Epochs 1-2 as they were trained; epoch 3 at the rates of a 3-epoch run, batch by batch.
    rates = [h["lr"] for h in longer.history]
    assert rates[:2] == [h["lr"] for h in first.history]
    assert rates[2] == pytest.approx(planned_3[2 * STEPS_PER_EPOCH], rel=1e-12)
    batches = _batch_rates(events)
    assert sorted(batches) == [(3, b) for b in range(1, STEPS_PER_EPOCH + 1)]
    for (_, batch), rate in batches.items():
        assert rate == pytest.approx(planned_3[2 * STEPS_PER_EPOCH + batch], rel=1e-12)
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["config"]["epochs"] == 3 and saved["epoch"] == 3
    assert saved["scheduler"]["last_epoch"] == 3 * STEPS_PER_EPOCH
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["epochs"] == 3 and len(report["history"]) == 3
    assert report["extended"] == [{"from_epochs": 2, "to_epochs": 3, "after_epoch": 2}]

    # Once more from the command line, which says so in its last lines.
    args = ["train", str(train_data), "--out", str(out), "--resume", "--epochs", "4"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "extended from 2 to 3 epochs after epoch 2" in printed
    assert (
        "extended from 3 to 4 epochs after epoch 3 (learning-rate schedule recomputed for 4 "
        "epochs)" in printed
    )
    report = json.loads((out / "report.json").read_text())
    assert [e["to_epochs"] for e in report["extended"]] == [3, 4]

    # Fewer epochs than the run has, or other settings, are still refused.
    with pytest.raises(
        HistoViewerError,
        match=r"settings differ .*\(epochs: 4 -> 3, but a run can only be extended\)",
    ):
        fit(tiny_config(train_data, out, epochs=3, **settings), resume=True)
    with pytest.raises(HistoViewerError, match=r"settings differ .*\(lr: 0\.002 -> 0\.01\)"):
        fit(tiny_config(train_data, out, **{**settings, "epochs": 6, "lr": 0.01}), resume=True)
