"""Batch mapping under torchrun when a process meets a slow slide, fails or is killed:
real gloo processes (tests/torchrun_faults.py plants the fault in one of them).

Two processes are launched as one node (``torchrun --standalone``, whose agent stops
the others when one process ends badly) or as two nodes of one process each (as on two
machines: nobody stops the survivor but itself). Either way every process must stop
within a minute of the fault, saying which process failed and why.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from mapping_support import batch_map_args, he_texture
from PIL import Image
from torchrun_faults import Node, one_node, two_nodes

from histoviewer.mapping import batch
from histoviewer.model import ModelInfo, build_network, save_model

SLIDES = ["a.png", "b.png", "c.png", "d.png", "e.png"]
LONG_SLIDE_S = "90"  # the survivor's first slide: far longer than the minute allowed


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    for i, name in enumerate(SLIDES):
        Image.fromarray(he_texture(150, 300, seed=i)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, build_network("resnet18", 8), ModelInfo.recipe("resnet18", input_size=32))
    return path


def _stopped_within_a_minute(fault: Node, survivor: Node) -> float:
    (struck,) = fault.times("fault")
    (ended,) = survivor.times("exit 1")
    # Not a timing test: without the fix the survivor maps its 90 s slide and more.
    assert ended - struck < 60, survivor.stderr[-3000:]
    return ended - struck


def test_a_slow_slide_holds_back_only_the_process_mapping_it(slides, model, tmp_path):
    """Slides go to whichever process is free: while one process is held by slide a
    (which here waits until every other slide is mapped), the other maps all the rest."""
    out = tmp_path / "out"
    node = one_node(
        ["-q", *batch_map_args(slides, model, out)], HV_FAULT="slow-slide", HV_SLOW_SLIDE="a.png"
    )
    assert node.returncode == 0, node.stderr[-3000:]
    ranks = {
        name: json.loads(batch.sidecar_path(out, Path(name)).read_text())["outcome"]["rank"]
        for name in SLIDES
    }
    slow = ranks.pop("a.png")
    assert set(ranks.values()) == {1 - slow}, ranks
    rows = _summary(out)
    assert [Path(r["slide"]).name for r in rows] == SLIDES
    assert {r["status"] for r in rows} == {"mapped"}


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / batch.SUMMARY_FILE, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("failing", [1, 0])
def test_a_process_that_fails_stops_the_others_at_once(slides, model, tmp_path, failing):
    """Process ``failing`` finds the disk full at its first slide, while the other is
    in a long slide; on two nodes nothing but the fix stops the survivor."""
    out = tmp_path / "out"
    nodes = two_nodes(
        ["-q", *batch_map_args(slides, model, out)],
        HV_FAULT="disk-full",
        HV_FAULT_RANK=str(failing),
        HV_LONG_SLIDE_S=LONG_SLIDE_S,
    )
    fault, survivor = nodes[failing], nodes[1 - failing]
    assert fault.returncode != 0 and survivor.returncode != 0
    reason = "cannot write .*: the disk is full"
    assert re.search(rf"histoviewer: error: {reason}", fault.stderr), fault.stderr[-3000:]
    expected = rf"histoviewer: error: process {failing} of 2 failed: {reason}"
    assert re.search(expected, survivor.stderr), survivor.stderr[-3000:]
    for node in nodes:
        assert "unexpected error" not in node.stderr
    _stopped_within_a_minute(fault, survivor)
    assert not (out / batch.SUMMARY_FILE).exists()


@pytest.mark.parametrize("swallow", ["", "first", "all"])
def test_a_killed_process_stops_the_others(slides, model, tmp_path, swallow):
    """Process 1 is killed (SIGKILL) at its first slide while process 0 is in a long
    one; torchrun then stops process 0 (SIGTERM), which says why, within torchrun's
    30 s grace period (after which it would be killed without a word). ``swallow``: the
    exception SIGTERM raises lands in a broad ``except`` that swallows it (the first
    time, or every time), as a SIGTERM during an optional import's check would."""
    out = tmp_path / "out"
    node = one_node(
        ["-q", *batch_map_args(slides, model, out)],
        HV_FAULT="kill",
        HV_FAULT_RANK="1",
        HV_LONG_SLIDE_S=LONG_SLIDE_S,
        HV_SWALLOW=swallow,
    )
    assert node.returncode != 0
    if swallow:
        assert "fault-test: swallowed Terminated(" in node.stderr, node.stderr[-3000:]
    expected = (
        "histoviewer: error: stopped by torchrun: process 1 of 2 stopped unexpectedly "
        "(killed, out of memory, or its machine is down)"
    )
    if swallow == "all":  # only the watcher can stop it
        expected += " (this process did not stop by itself within 10 s and was ended)"
    assert expected in node.stderr, node.stderr[-3000:]
    assert "unexpected error" not in node.stderr
    assert "forcefully exiting via 9" not in node.stderr  # torchrun's SIGKILL
    if swallow != "all":  # there the watcher ends the process before it can say when
        _stopped_within_a_minute(node, node)
    assert not (out / batch.SUMMARY_FILE).exists()
