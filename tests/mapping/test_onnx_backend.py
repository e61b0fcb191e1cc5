"""The onnxruntime inference backend: agreement with PyTorch, the export cache, the
backend choice, ``map --backend`` and the benchmark's report."""

from __future__ import annotations

import hashlib
import logging
import sys

import numpy as np
import pytest
import torch
from mapping_support import batch_map_args, he_texture, tiny_classifier

from histoviewer import cli
from histoviewer.errors import DeviceError
from histoviewer.mapping import batch, engine, onnx_backend
from histoviewer.mapping.benchmark import BenchmarkResult, Run, engine_backends
from histoviewer.mapping.engine import choose_backend, make_runner, map_slide
from histoviewer.mapping.tissue_map import TissueMap
from histoviewer.model import Classifier, ModelInfo, build_network
from histoviewer.slide.synthetic import write_strip_tiff

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_sessions():
    """Every test starts without the sessions an earlier one kept."""
    onnx_backend.clear_sessions()
    yield
    onnx_backend.clear_sessions()


@pytest.fixture
def exports(monkeypatch):
    """Counts the exports (each call of onnx_backend.export_onnx)."""
    calls = []
    real = onnx_backend.export_onnx

    def counting(classifier):
        calls.append(classifier.fingerprint)
        return real(classifier)

    monkeypatch.setattr(onnx_backend, "export_onnx", counting)
    return calls


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh export folder for this test, used by map_slide's runners too."""
    folder = tmp_path / "onnx"
    monkeypatch.setenv(onnx_backend.ONNX_CACHE_ENV, str(folder))
    return folder


def patches(n: int = 10, size: int = 150, seed: int = 3) -> np.ndarray:
    image = he_texture(size * 2, size * ((n + 1) // 2), seed=seed)
    tiles = [
        image[r * size : (r + 1) * size, c * size : (c + 1) * size]
        for r in range(2)
        for c in range((n + 1) // 2)
    ]
    return np.stack(tiles[:n])


def onnx_files(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.onnx"))


# --- agreement with PyTorch ----------------------------------------------------------------


def test_probabilities_equal_pytorch_float32(classifier, cache):
    pixels = torch.from_numpy(patches(10))
    ort_runner = onnx_backend.OnnxRunner(classifier, batch_size=4)
    torch_runner = make_runner(classifier, CPU, "fp32", 4, "torch")
    assert (ort_runner.name, torch_runner.name) == ("onnxruntime", "torch")
    assert ort_runner.device == CPU
    got, want = ort_runner(pixels), torch_runner(pixels)
    assert got.dtype == np.float32 and got.shape == (10, classifier.num_classes)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # softmax in the graph
    assert (got.argmax(1) == want.argmax(1)).all()
    # Patches of a finer scan (area-averaged first) go through the same preprocessing.
    fine = torch.from_numpy(patches(3, size=300))
    np.testing.assert_allclose(ort_runner(fine), torch_runner(fine), atol=1e-4, rtol=0)


def test_map_with_onnxruntime_equals_the_pytorch_float32_map(
    tissue_slide, classifier, cache, monkeypatch
):
    runs = []
    forward = onnx_backend.OnnxRunner.forward
    monkeypatch.setattr(
        onnx_backend.OnnxRunner, "forward", lambda self, x: runs.append(len(x)) or forward(self, x)
    )
    ort = map_slide(tissue_slide, classifier, skip_background=False, backend="onnxruntime")
    assert sum(runs) == 12  # every patch went through ONNX Runtime
    ref = map_slide(
        tissue_slide, classifier, skip_background=False, precision="fp32", backend="torch"
    )
    assert sum(runs) == 12
    assert ort.complete and (ort.state == ref.state).all()
    np.testing.assert_allclose(ort.probs, ref.probs, atol=1e-4, rtol=0)
    assert (ort.labels == ref.labels).all()


# --- the export cache ----------------------------------------------------------------------


def test_the_export_is_kept_once_per_model(tmp_path, exports, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="histoviewer")
    clf = tiny_classifier(seed=0)
    onnx_backend.OnnxRunner(clf, batch_size=4, cache_dir=tmp_path)
    (name,) = onnx_files(tmp_path)
    assert clf.fingerprint in name and "-32px-8c-" in name
    assert name.endswith(f"-v{onnx_backend.EXPORT_VERSION}.onnx")
    path = tmp_path / name
    digest = (tmp_path / f"{name}.sha256").read_text().split()[0]
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "exported resnet18" in caplog.text and "session for resnet18" in caplog.text
    assert exports == [clf.fingerprint]
    stamp = path.stat().st_mtime_ns

    # In this process the session itself is kept: no export, no new session.
    sessions = []
    create = onnx_backend._create_session
    monkeypatch.setattr(
        onnx_backend, "_create_session", lambda *a: sessions.append(1) or create(*a)
    )
    again = onnx_backend.OnnxRunner(clf, batch_size=8, cache_dir=tmp_path)
    assert sessions == [] and again.chunk == 8
    # A new process (no kept session) loads the file instead of exporting again.
    onnx_backend.clear_sessions()
    runner = onnx_backend.OnnxRunner(clf, batch_size=4, cache_dir=tmp_path)
    assert sessions == [1] and exports == [clf.fingerprint]
    assert path.stat().st_mtime_ns == stamp
    assert runner(torch.from_numpy(patches(2))).shape == (2, 8)
    # Other weights are another model: another file.
    other = tiny_classifier(seed=1)
    onnx_backend.OnnxRunner(other, batch_size=4, cache_dir=tmp_path)
    assert exports == [clf.fingerprint, other.fingerprint]
    assert len(onnx_files(tmp_path)) == 2
    assert any(other.fingerprint in n for n in onnx_files(tmp_path))


@pytest.mark.parametrize("damage", ["truncated", "garbage with a matching digest"])
def test_a_damaged_export_is_made_again(tissue_slide, classifier, cache, exports, damage, caplog):
    onnx_backend.OnnxRunner(classifier, batch_size=4)
    (name,) = onnx_files(cache)
    path = cache / name
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:  # the digest is right, but ONNX Runtime cannot load the file
        path.write_bytes(b"not a model" * 100)
        (cache / f"{name}.sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    onnx_backend.clear_sessions()
    caplog.set_level(logging.WARNING, logger="histoviewer")
    tmap = map_slide(tissue_slide, classifier, skip_background=False, backend="onnxruntime")
    assert len(exports) == 2
    assert "damaged" in caplog.text if damage == "truncated" else "cannot be loaded" in caplog.text
    assert tmap.complete and np.isfinite(tmap.probs).all()
    ref = map_slide(
        tissue_slide, classifier, skip_background=False, precision="fp32", backend="torch"
    )
    np.testing.assert_allclose(tmap.probs, ref.probs, atol=1e-4, rtol=0)
    # Written again, whole, with its digest.
    data = path.read_bytes()
    assert len(data) == len(good)
    assert (cache / f"{name}.sha256").read_text().split()[0] == hashlib.sha256(data).hexdigest()


def test_a_folder_that_cannot_be_written_still_maps(
    tissue_slide, classifier, tmp_path, monkeypatch, exports, caplog
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(onnx_backend.ONNX_CACHE_ENV, str(blocker / "onnx"))
    caplog.set_level(logging.WARNING, logger="histoviewer")
    tmap = map_slide(tissue_slide, classifier, skip_background=False, backend="onnxruntime")
    assert tmap.complete and tmap.classified_count == 12
    assert "using it from memory" in caplog.text
    assert exports == [classifier.fingerprint]
    assert blocker.read_text() == "not a folder"
    # Nothing was kept: another process would export again.
    onnx_backend.clear_sessions()
    onnx_backend.OnnxRunner(classifier, batch_size=4)
    assert len(exports) == 2


def test_the_default_folder_is_in_the_users_cache(monkeypatch, tmp_path):
    from histoviewer.mapping.cache import user_cache_dir

    monkeypatch.delenv(onnx_backend.ONNX_CACHE_ENV, raising=False)
    assert onnx_backend.onnx_cache_dir() == user_cache_dir() / "onnx"
    monkeypatch.setenv(onnx_backend.ONNX_CACHE_ENV, str(tmp_path / "x"))
    assert onnx_backend.onnx_cache_dir() == tmp_path / "x"


class Untraceable(torch.nn.Module):
    """A network the ONNX exporter cannot trace (as one with an unknown operation)."""

    def __init__(self) -> None:
        super().__init__()
        self.network = build_network("resnet18", 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing():
            raise TypeError("not exportable")
        return self.network(x)


def test_a_model_that_does_not_export_maps_with_pytorch_under_auto(
    tissue_slide, cache, exports, caplog
):
    torch.manual_seed(0)
    info = ModelInfo.recipe("resnet18", input_size=32, name="untraceable")
    clf = Classifier.from_network(Untraceable(), info)
    with pytest.raises(DeviceError, match=r"exporting it to ONNX failed \(TypeError: not expo"):
        make_runner(clf, CPU, "fp32", 4, "onnxruntime")
    caplog.set_level(logging.WARNING, logger="histoviewer")
    assert make_runner(clf, CPU, "fp32", 4, "auto").name == "torch"
    assert "using the torch backend" in caplog.text
    tmap = map_slide(tissue_slide, clf, precision="fp32", skip_background=False)
    assert tmap.complete and np.isfinite(tmap.probs).all()
    assert len(exports) == 1  # not tried again for the same model
    assert onnx_files(cache) == []


# --- choosing the backend ------------------------------------------------------------------


@pytest.fixture
def not_installed(monkeypatch):
    """onnxruntime cannot be imported (as where it is not installed)."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    onnx_backend.available.cache_clear()
    yield
    onnx_backend.available.cache_clear()


def test_auto_uses_onnxruntime_on_a_cpu_computing_in_float32(monkeypatch):
    assert onnx_backend.available()
    assert choose_backend("auto", CPU, "fp32") == "onnxruntime"
    assert choose_backend("auto", CPU, "bf16") == "torch"
    assert choose_backend("auto", torch.device("cuda"), "fp32") == "torch"
    assert choose_backend("torch", CPU, "fp32") == "torch"
    # precision "auto": float32 on a CPU without native bf16, bf16 on one with it.
    monkeypatch.setattr(engine, "autocast_dtype", lambda device: None)
    assert choose_backend("auto", CPU, "auto") == "onnxruntime"
    monkeypatch.setattr(engine, "autocast_dtype", lambda device: torch.bfloat16)
    assert choose_backend("auto", CPU, "auto") == "torch"
    assert choose_backend("onnxruntime", CPU, "auto") == "onnxruntime"
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend("tensorrt", CPU, "fp32")


@pytest.mark.parametrize(
    ("device", "precision", "words"),
    [
        ("cpu", "bf16", "computes in float32; --precision bf16 needs --backend torch"),
        ("cuda", "fp32", "runs on the CPU only"),
    ],
)
def test_onnxruntime_where_it_cannot_run_is_a_device_error(device, precision, words):
    with pytest.raises(DeviceError, match=words):
        choose_backend("onnxruntime", torch.device(device), precision)


def test_without_onnxruntime_auto_falls_back_to_pytorch(not_installed, tissue_slide, classifier):
    assert not onnx_backend.available()
    assert choose_backend("auto", CPU, "fp32") == "torch"
    with pytest.raises(DeviceError, match="onnxruntime backend is not installed"):
        choose_backend("onnxruntime", CPU, "fp32")
    tmap = map_slide(tissue_slide, classifier, precision="fp32", max_patches=2)
    assert tmap.classified_count == 2
    assert engine_backends("all", CPU, "fp32") == ["torch"]


# --- the command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    for i in range(2):
        write_strip_tiff(folder / f"slide{i}.tif", width=450, height=300, seed=i)
    return folder


@pytest.fixture
def backends_used(monkeypatch):
    """The ``backend`` of every map_slide call made by ``histoviewer map``."""
    used = []
    real = batch.map_slide

    def recording(*args, **kwargs):
        used.append(kwargs.get("backend", "auto"))
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "map_slide", recording)
    return used


def test_map_backend_reaches_the_engine(slides, tiny_model, tmp_path, cache, backends_used):
    one = slides / "slide0.tif"
    assert cli.main(map_cli([one], tiny_model, tmp_path / "a", "--backend", "onnxruntime")) == 0
    assert backends_used == ["onnxruntime"]
    assert len(onnx_files(cache)) == 1  # it really ran through ONNX Runtime
    ort = TissueMap.load(tmp_path / "a" / "slide0.npz")
    fp32 = ("--precision", "fp32")
    assert cli.main(map_cli([one], tiny_model, tmp_path / "b", "--backend", "torch", *fp32)) == 0
    assert cli.main(map_cli([one], tiny_model, tmp_path / "c")) == 0
    assert backends_used == ["onnxruntime", "torch", "auto"]
    ref = TissueMap.load(tmp_path / "b" / "slide0.npz")
    np.testing.assert_allclose(ort.probs, ref.probs, atol=1e-4, rtol=0)


def test_the_backend_is_not_part_of_a_batchs_skip_key(
    slides, tiny_model, tmp_path, cache, backends_used, capsys
):
    argv = map_cli([slides], tiny_model, tmp_path / "out", "--precision", "fp32")
    assert cli.main([*argv, "--backend", "torch"]) == 0
    assert backends_used == ["torch", "torch"]
    assert cli.main([*argv, "--backend", "onnxruntime"]) == 0
    assert backends_used == ["torch", "torch"]  # the same result: both slides skipped
    assert capsys.readouterr().out.count("skipped, already mapped with this model") == 2


@pytest.mark.parametrize(
    ("more", "words"),
    [
        (["--precision", "bf16"], "the onnxruntime backend computes in float32"),
        (["--precision", "fp16"], "the onnxruntime backend computes in float32"),
    ],
)
def test_an_impossible_backend_is_one_line_before_any_slide_is_read(
    slides, tiny_model, tmp_path, backends_used, capsys, more, words
):
    for inputs in ([slides / "slide0.tif"], [slides]):
        argv = map_cli(inputs, tiny_model, tmp_path / "out", "--backend", "onnxruntime", *more)
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"histoviewer: error: {words}") and err.count("\n") == 1
    assert backends_used == []


def test_map_without_onnxruntime_installed_refuses_it_in_one_line(
    not_installed, slides, tiny_model, tmp_path, capsys
):
    argv = map_cli([slides / "slide0.tif"], tiny_model, tmp_path, "--backend", "onnxruntime")
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err == (
        "histoviewer: error: the onnxruntime backend is not installed (pip install onnxruntime)\n"
    )


# --- the benchmark ---------------------------------------------------------------------------


def run(name, rate, probs, *, backend="", model_rate=0.0) -> Run:
    """A side that classified len(probs) patches, 10 of them in a first batch of 1 s."""
    probs = np.asarray(probs, np.float32)
    n = len(probs)
    return Run(
        name,
        backend=backend,
        patches=n,
        first_batch=1.0,
        first_batch_patches=10,
        total=1.0 + (n - 10) / rate,
        cpu_first_batch=2.0,
        cpu_total=2.0 + 2 * (n - 10) / rate,
        model_rate=model_rate,
        probs=probs,
        labels=probs.argmax(axis=1),
    )


def test_benchmark_result_compares_each_engine_side_with_the_baseline():
    rng = np.random.default_rng(0)
    base = rng.dirichlet(np.ones(4), size=110).astype(np.float32)
    close = base.copy()
    close[:, 0] += 0.0004
    swapped = base.copy()
    swapped[:11] = swapped[:11, ::-1]  # 10 % of the patches in another class (mostly)
    result = BenchmarkResult(
        device="cpu",
        arch="resnet50",
        input_size=224,
        batch_size=64,
        slide_size=5000,
        threads=2,
        baseline=run("baseline", 5.0, base),
        engines=[
            run("torch", 20.0, swapped, backend="torch", model_rate=25.0),
            run("onnxruntime", 30.0, close, backend="onnxruntime", model_rate=32.0),
        ],
    )
    torch_side, ort_side = result.engines
    assert result.engine("onnxruntime") is ort_side
    with pytest.raises(KeyError):
        result.engine("tensorrt")
    assert result.speedup(torch_side) == pytest.approx(4.0)
    assert result.speedup(ort_side) == pytest.approx(6.0)
    assert result.speedup(ort_side, torch_side) == pytest.approx(1.5)
    assert result.cpu_speedup(ort_side) == pytest.approx(6.0)
    assert result.agreement(ort_side) == 1.0
    assert result.max_prob_diff(ort_side) == pytest.approx(0.0004, abs=1e-6)
    expected = np.mean(swapped.argmax(1) == base.argmax(1))
    assert expected < 1 and result.agreement(torch_side) == pytest.approx(expected)
    assert ort_side.model_share == pytest.approx(30 / 32)
    report = result.report()
    assert "110 patches" in report
    assert "onnxruntime: 6.00x the baseline" in report
    assert "torch: 4.00x the baseline" in report
    assert "onnxruntime: network alone 32.0 patches/s" in report and "end to end 94 %" in report
    assert "onnxruntime / torch: 1.50x" in report
    assert "agreement 100.00 % same class, largest probability difference 0.00040" in report


def test_benchmark_sides(monkeypatch):
    assert engine_backends("all", CPU, "fp32") == ["torch", "onnxruntime"]
    assert engine_backends("all", CPU, "bf16") == ["torch"]
    assert engine_backends("all", torch.device("cuda"), "auto") == ["torch"]
    assert engine_backends("torch", CPU, "fp32") == ["torch"]
    assert engine_backends("auto", CPU, "fp32") == ["onnxruntime"]
    with pytest.raises(DeviceError, match="computes in float32"):
        engine_backends("onnxruntime", CPU, "bf16")


def test_the_command_line_offers_the_engines_backends():
    from histoviewer.mapping import commands

    assert commands.BACKENDS == engine.BACKENDS


def map_cli(slides, model, out, *more: str) -> list[str]:
    """`histoviewer map` of ``slides`` on the CPU, background included."""
    return batch_map_args(slides, model, out, "--no-skip-background", *more)
