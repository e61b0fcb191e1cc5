"""The command line's training bars: whole tiles and batches, no meaningless rates."""

from __future__ import annotations

import re

from histoviewer import cli
from histoviewer.tasks import count_bar
from histoviewer.training.commands import _ProgressBar
from histoviewer.training.trainer import TrainEvent

# A tqdm rate ("6411674.90img/s", "2041.02batch/s", "3.20it/s") or a fractional count.
TQDM_RATE = re.compile(r"\d\.\d\d ?(img|batch|batches|tiles?|it|files?)(/s)?\b")


def test_the_loading_bar_counts_tiles_and_the_epoch_bars_batches(capsys):
    bar = _ProgressBar(enabled=True)
    # The first report comes after the first chunk of 256 tiles is decoded.
    for done in (256, 512, 1000):
        bar(TrainEvent("load", phase="load", batch=done, batches=1000))
        if done == 512:
            loading = str(bar.bar)
    for batch in (1, 2, 3):
        bar(
            TrainEvent(
                "batch",
                epoch=1,
                epochs=2,
                batch=batch,
                batches=3,
                phase="train",
                loss=0.5,
                acc=0.75,
                images_per_s=812.4,
                eta_s=65,
            )
        )
        if batch == 2:
            training = str(bar.bar)
    bar.close()
    err = capsys.readouterr().err
    assert re.fullmatch(r"loading:  51%\|.*\| 512/1000 tiles \[00:00<[0-9:?]+\]", loading)
    assert re.fullmatch(
        r"epoch 1/2 train:  67%\|.*\| 2/3 batches "
        r"\[00:00, loss=0\.5000, acc=0\.750, img/s=812, eta=1:05\]",
        training,
    )
    assert "1000/1000 tiles" in err and "3/3 batches" in err
    assert not TQDM_RATE.search(err), err


def test_a_bar_started_late_does_not_count_earlier_work_as_instant():
    # Half the tiles were read before the bar appeared; 100 more in the bar's 10 s.
    bar = count_bar(5000, "loading", "tiles", initial=2500, remaining=True)
    try:
        bar.start_t -= 10
        bar.n = 2600
        # 10 tiles/s: 4 minutes left for 2400 tiles (not 9 s, at 2600 tiles in 10 s).
        assert re.search(r"2600/5000 tiles \[00:1\d<0[34]:\d\d\]$", str(bar)), str(bar)
    finally:
        bar.close()


def test_train_prints_whole_counts(capsys, train_data, tmp_path):
    argv = ["train", str(train_data), "--out", str(tmp_path / "run"), "--epochs", "1"]
    argv += ["--arch", "resnet18", "--image-size", "32", "--batch-size", "20"]
    argv += ["--device", "cpu", "--workers", "2"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "75/75 tiles" in err  # the 75 tiles of train_data
    assert re.search(r"epoch 1/1 train: .*\d+/\d+ batches", err)
    assert not TQDM_RATE.search(err), err
