"""engines/: ONNX export and ONNX Runtime parity with torch, the engine cache, the backend choice, TensorRT logic.

A small bundle of randomly initialised networks stands in for a trained one: parity does not need training.
TensorRT tests run only where TensorRT and an NVIDIA GPU are present.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from streamrec.core.audio_setup import make_setup
from streamrec.core.bundle import Bundle
from streamrec.core.graphs import example_inputs, graph_spec
from streamrec.core.models.audio import AudioDims, build_audio_model
from streamrec.core.models.fusion import FusionDims, LateFusion
from streamrec.core.models.video import FrameNet, VideoDims
from streamrec.engines import Engine, EngineError, EngineOptions, TensorSpec, build_engines, choose_backend, load_engine
from streamrec.engines.cache import EngineCache, EngineKey
from streamrec.engines.export import representative_inputs
from streamrec.engines.loader import export_key
from streamrec.engines.onnxruntime_engine import CPU_FAMILIES, INT8_QUALIFIED, cpu_family, int8_refusal
from streamrec.engines.tensorrt_engine import calibration_batches, calibration_profile, profile_shapes, tensorrt_status
from streamrec.engines.torch_engine import TorchEngine

CLASSES = ("a", "b", "c")
AUDIO_DIMS = AudioDims("han", 3, 64, channels=(8, 8, 16, 16), embedding_dim=32)
FUSION_DIMS = FusionDims(3, audio_dim=32, video_dim=16, k_frames=2, common_dim=8, hidden=32)
FP32_TOLERANCE = 1e-4  # ONNX Runtime vs torch, relative to the largest output (at least 1)

TENSORRT_OK, TENSORRT_WHY = tensorrt_status()
needs_tensorrt = pytest.mark.skipif(not TENSORRT_OK, reason=f"TensorRT/NVIDIA GPU not available ({TENSORRT_WHY})")


@torch.no_grad()
def _settle_batchnorm(net: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """Running statistics from a few random batches, as training would leave them. With the initial ones
    (mean 0, variance 1) a random EfficientNet's features shrink to ~1e-8: denormal floats (slow) and a
    trunk too faint for a parity test to see."""
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches below
    net.train()
    net(example)
    return net.eval()


def _save_audio(bundle: Bundle, seed: int, dims: AudioDims = AUDIO_DIMS, window: float | None = None) -> None:
    torch.manual_seed(seed)
    frames = make_setup(dims.arch, frontend="realtime", window_seconds=window).frontend.frames_per_window
    net = _settle_batchnorm(build_audio_model(dims), torch.randn(8, dims.n_mels, frames) * 3 - 6)
    setup = make_setup(dims.arch, frontend="realtime", window_seconds=window)
    bundle.save_network("audio", net, dims.arch, dims.to_dict(), {"setup": setup.to_dict()})


def _make_bundle(root: Path, video: bool = True, fusion: bool = True) -> Bundle:
    bundle = Bundle.create(root, CLASSES)
    _save_audio(bundle, seed=0)
    torch.manual_seed(1)
    if video:  # two heads (FrameHeads): the exported graph averages their probabilities
        net = FrameNet(VideoDims("efficientnet_lite0", 3, embedding_dim=16, pretrained=False, heads=2))
        _settle_batchnorm(net, torch.rand(4, 3, 128, 128))  # fully convolutional: smaller frames will do
        bundle.save_network("video", net, "efficientnet_lite0", net.dims.to_dict(), {})
    if fusion:
        net = LateFusion(FUSION_DIMS).eval()
        bundle.save_network("fusion", net, "late_fusion", FUSION_DIMS.to_dict(), {"scheme": "frozen"})
    return Bundle.load(root)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    """Torch on one thread, like the ONNX Runtime sessions here: two threads on a shared 2-core machine spin
    against each other and make the run slow and its duration erratic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """Audio (Han, real-time front end), video (EfficientNet-Lite0, two frame heads) and fusion networks, randomly
    initialised."""
    return _make_bundle(tmp_path_factory.mktemp("engines") / "bundle")


@pytest.fixture(scope="module")
def ort_engines(bundle: Bundle) -> dict[str, Engine]:
    """The ONNX Runtime FP32 engine of every kind, built once into the bundle's cache."""
    engines = {
        kind: load_engine(bundle, kind, "onnxruntime", options=EngineOptions(threads=1))
        for kind in ("audio", "video", "fusion")
    }
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.fixture
def audio_bundle(tmp_path: Path) -> Bundle:
    """A private bundle with only the (cheap) audio network, for tests that damage its cache."""
    return _make_bundle(tmp_path / "audio_only", video=False, fusion=False)


def _assert_close(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], tolerance: float) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        scale = max(1.0, float(np.abs(value).max()))
        diff = float(np.abs(got[name] - value).max())
        assert diff <= tolerance * scale, f"{name}: max abs diff {diff:.3g} (output scale {scale:.3g})"


def _assert_same_top1(got: np.ndarray, expected: np.ndarray, tolerance: float) -> None:
    """Top-1 classes agree wherever the reference's margin between its two best classes is not a near-tie."""
    ordered = np.sort(expected, axis=1)
    decided = ordered[:, -1] - ordered[:, -2] > 2 * tolerance * max(1.0, float(np.abs(expected).max()))
    assert decided.any()
    assert (got.argmax(1) == expected.argmax(1))[decided].all()


# ---------------------------------------------------------------------------------------------------------------
# Export and parity


def test_graph_specs_follow_the_bundle(bundle: Bundle) -> None:
    audio, video, fusion = (graph_spec(bundle, k) for k in ("audio", "video", "fusion"))
    assert audio.inputs == (TensorSpec("logmel", (None, 64, 101)),)  # 1 s at the real-time front end: 101 frames
    assert [s.name for s in audio.outputs] == ["scores", "embedding"] and audio.outputs[1].shape == (None, 32)
    assert not audio.scores_are_probabilities and audio.frontend["sample_rate"] == 16000
    assert video.inputs == (TensorSpec("images", (None, 3, 224, 224)),)
    assert [s.shape for s in video.outputs] == [(None, 3), (None, 16)]
    assert [s.name for s in fusion.inputs] == ["audio", "frames", "present"]
    assert fusion.inputs[1].shape == (None, 2, 16) and fusion.outputs == (TensorSpec("logits", (None, 3)),)


@pytest.mark.parametrize("kind", ["audio", "video", "fusion"])
def test_onnxruntime_matches_torch_at_batch_1_and_8(kind: str, bundle: Bundle, ort_engines: dict) -> None:
    engine = ort_engines[kind]
    reference = TorchEngine(bundle, kind)
    assert isinstance(engine, Engine) and isinstance(reference, Engine)
    assert engine.input_spec == graph_spec(bundle, kind).inputs
    assert [s.name for s in engine.output_spec] == [s.name for s in reference.output_spec]
    realistic = representative_inputs(bundle, kind, 8, seed=2)
    first = engine.output_spec[0].name
    for inputs in (example_inputs(graph_spec(bundle, kind), 8, seed=3), realistic):
        got, expected = engine.infer(inputs), reference.infer(inputs)  # batch 8
        _assert_close(got, expected, FP32_TOLERANCE)
        _assert_same_top1(got[first], expected[first], FP32_TOLERANCE)
        single = {name: value[:1] for name, value in inputs.items()}
        _assert_close(engine.infer(single), {k: v[:1] for k, v in expected.items()}, FP32_TOLERANCE)


def test_torch_engine_reproduces_the_networks_own_outputs(bundle: Bundle) -> None:
    """The export wrappers (scores and embedding from one graph) change nothing: checked against the modules."""
    from streamrec.core.models import load_network

    nets = {kind: load_network(bundle, kind) for kind in ("audio", "video", "fusion")}
    for kind, net in nets.items():
        inputs = representative_inputs(bundle, kind, 1 if kind == "video" else 4, seed=13)
        got = TorchEngine(bundle, kind).infer(inputs)
        args = [torch.from_numpy(v) for v in inputs.values()]
        with torch.no_grad():
            names = [s.name for s in graph_spec(bundle, kind).outputs]  # (scores or logits)[, embedding]
            outputs = [net(*args)] + ([net.embed(*args)] if kind != "fusion" else [])
        _assert_close(got, {name: out.numpy() for name, out in zip(names, outputs)}, 1e-6)


def test_engine_networks_match_the_runtimes_torch_networks(bundle: Bundle, ort_engines) -> None:
    from streamrec.core.features import LogMelConfig
    from streamrec.core.networks import TorchNetworks
    from streamrec.engines.export import synthetic_images, synthetic_waveforms
    from streamrec.engines.networks import EngineNetworks

    engines, reference = EngineNetworks(bundle, "onnxruntime", options=EngineOptions(threads=1)), TorchNetworks(bundle)
    windows = synthetic_waveforms(3, LogMelConfig())
    images = (synthetic_images(2, 224).transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    for got, expected in (
        (engines.audio(windows), reference.audio(windows)),
        (engines.frames(images), reference.frames(images)),
    ):
        _assert_close(dict(zip("pe", got)), dict(zip("pe", expected)), FP32_TOLERANCE)
    fusion = representative_inputs(bundle, "fusion", 3)
    _assert_close({"p": engines.fuse(*fusion.values())}, {"p": reference.fuse(*fusion.values())}, FP32_TOLERANCE)
    engines.close()


def test_exported_graphs_have_a_dynamic_batch_axis_only(bundle: Bundle, ort_engines: dict) -> None:
    for kind, engine in ort_engines.items():
        model = onnx.load(str(engine.metadata["path"]))
        for tensor in (*model.graph.input, *model.graph.output):
            dims = tensor.type.tensor_type.shape.dim
            assert dims[0].dim_param and not dims[0].HasField("dim_value"), (kind, tensor.name)
            assert all(d.HasField("dim_value") for d in dims[1:]), (kind, tensor.name)
        assert engine.metadata["weights_sha256"] == bundle.network(kind)["sha256"]


def test_wrong_inputs_are_refused_with_the_input_named(ort_engines: dict) -> None:
    engine = ort_engines["audio"]
    with pytest.raises(ValueError, match="logmel"):
        engine.infer({"logmel": np.zeros((1, 64, 50), np.float32)})
    with pytest.raises(ValueError, match="needs inputs present"):
        ort_engines["fusion"].infer(
            {"audio": np.zeros((1, 32), np.float32), "frames": np.zeros((1, 2, 16), np.float32)}
        )


@pytest.mark.slow  # exports the attention network
def test_attention_audio_graph_outputs_probabilities(tmp_path: Path) -> None:
    """forward() of the attention network pools class activity over ~1 s patches: 201 frames make 3 patches,
    the last one zero-padded (a ceil division the exporters must not truncate)."""
    bundle = Bundle.create(tmp_path / "attention", CLASSES)
    dims = AudioDims("attention", 3, 64, channels=(8, 8, 16, 16), embedding_dim=16)
    _save_audio(bundle, seed=4, dims=dims, window=2.0)
    engine = load_engine(bundle, "audio", "onnxruntime", options=EngineOptions(threads=1))
    assert engine.metadata["scores_are_probabilities"] is True
    inputs = representative_inputs(bundle, "audio", 4, seed=6)
    got, expected = engine.infer(inputs), TorchEngine(bundle, "audio").infer(inputs)
    _assert_close(got, expected, FP32_TOLERANCE)
    assert got["scores"].min() >= 0 and got["scores"].max() <= 1


def test_int8_engines_stay_close_to_torch(bundle: Bundle) -> None:
    # The quantizer on any CPU, qualified for INT8 or not (int8_unqualified): the test below covers the refusal.
    options = EngineOptions(threads=1, int8_unqualified=True)
    for kind in ("audio", "fusion"):
        engine = load_engine(bundle, kind, "onnxruntime", "int8", options)
        check = engine.metadata["check"]  # measured against torch when the engine was built
        assert engine.metadata["precision"] == "int8" and check["top1_agreement"] >= 0.9, check
        inputs = representative_inputs(bundle, kind, 8, seed=8)
        got, expected = engine.infer(inputs), TorchEngine(bundle, kind).infer(inputs)
        _assert_close(got, expected, 0.1)  # weights rounded to 8 bits: a few percent, not more
        fp32 = load_engine(bundle, kind, "onnxruntime", "fp32", options).metadata["path"]
        assert Path(engine.metadata["path"]).stat().st_size < Path(fp32).stat().st_size  # 8-bit weights


def test_int8_quantization_goes_on_where_ort_symbolic_shape_inference_fails(
    bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ORT's symbolic shape inference raised TypeError on the shipped frame network's graph; quantization
    # then goes on with ONNX's shape inference only. The failure is reproduced here on the fusion graph.
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import shape_inference

    from streamrec.engines.onnxruntime_engine import quantize_int8

    real, calls = shape_inference.quant_pre_process, []

    def fails_with_symbolic_shapes(*args, skip_symbolic_shape: bool = False, **kwargs) -> None:
        calls.append(skip_symbolic_shape)
        if not skip_symbolic_shape:
            raise TypeError("object of type 'NoneType' has no len()")
        real(*args, skip_symbolic_shape=True, **kwargs)

    monkeypatch.setattr(shape_inference, "quant_pre_process", fails_with_symbolic_shapes)
    source = Path(load_engine(bundle, "fusion", "onnxruntime", "fp32", EngineOptions(threads=1)).metadata["path"])
    quantize_int8(source, tmp_path / "fusion-int8.onnx")
    assert calls == [False, True]
    quantized = onnx.load(str(tmp_path / "fusion-int8.onnx"))
    assert any("Integer" in node.op_type for node in quantized.graph.node)  # MatMulInteger: 8-bit weights
    assert ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"]).get_outputs()


def test_cpu_family_is_read_from_the_cpuinfo_flags() -> None:
    assert cpu_family("processor\t: 0\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni\n") == "avx512_vnni"
    assert cpu_family("flags\t\t: fpu avx2 avx_vnni\n") == "avx_vnni"
    assert cpu_family("flags\t\t: fpu sse4_2 avx avx2 fma\n") == "avx2"  # AMD EPYC here: no VNNI
    assert cpu_family("processor\t: 0\nFeatures\t: fp asimd\n") == "other"  # aarch64: no flags line


def test_int8_is_offered_only_where_qualified_and_refused_in_one_line_elsewhere(bundle: Bundle, monkeypatch) -> None:
    for family, kinds in INT8_QUALIFIED.items():
        assert all(int8_refusal(kind, family) is None for kind in kinds)
    for family in set(CPU_FAMILIES) - set(INT8_QUALIFIED):
        reason = int8_refusal("audio", family)
        assert reason is not None and "not measured" in reason and "\n" not in reason
    monkeypatch.setattr("streamrec.engines.loader.cpu_family", lambda: "other")  # a CPU nobody qualified
    options = EngineOptions(threads=1)
    with pytest.raises(EngineError, match="INT8 is not offered for the fusion network on this CPU"):
        load_engine(bundle, "fusion", "onnxruntime", "int8", options)
    assert load_engine(bundle, "fusion", "onnxruntime", "fp32", options).metadata["precision"] == "fp32"
    forced = load_engine(bundle, "fusion", "onnxruntime", "int8", EngineOptions(threads=1, int8_unqualified=True))
    assert forced.metadata["precision"] == "int8"  # for measuring a qualification only


def test_fp16_on_onnxruntime_falls_back_to_fp32_with_a_warning(bundle, ort_engines, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        engine = load_engine(bundle, "fusion", "onnxruntime", "fp16", EngineOptions(threads=1))
    assert engine.metadata["precision"] == "fp32" and "FP16 is not supported" in caplog.text


def test_in_graph_front_end_is_close_to_torchaudio() -> None:
    """The measured alternative to a log-mel input (streamrec.engines.export's docstring): an in-graph conv1d STFT."""
    from streamrec.bench.engines import compare_frontends

    (row,) = compare_frontends(presets=("realtime",), batch_sizes=(2,), repeats=1)
    assert row.max_abs_diff < 1e-3


# ---------------------------------------------------------------------------------------------------------------
# The cache


def _only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_cache_keys_change_with_weights_precision_runtime_and_gpu(audio_bundle: Bundle) -> None:
    base = export_key(audio_bundle, "audio")
    assert base == export_key(Bundle.load(audio_bundle.root), "audio")  # stable across loads
    variants = [
        EngineKey("onnx", "audio", "fp32", {**base.fields, "weights_sha256": "0" * 64}),
        EngineKey("onnx", "audio", "int8", base.fields),
        EngineKey("onnxruntime", "audio", "fp32", base.fields),
        EngineKey("onnx", "audio", "fp32", {**base.fields, "onnxruntime": "1.0.0"}),
        EngineKey("tensorrt", "audio", "fp32", {**base.fields, "gpu": "A", "compute_capability": "8.6"}),
        EngineKey("tensorrt", "audio", "fp32", {**base.fields, "gpu": "A", "compute_capability": "9.0"}),
    ]
    assert len({k.digest for k in [base, *variants]}) == len(variants) + 1
    _save_audio(audio_bundle, seed=7)  # new weights
    assert export_key(audio_bundle, "audio").digest != base.digest


@pytest.mark.slow  # exports and builds twice
def test_stale_engine_after_a_weights_change_is_rebuilt_with_a_warning(audio_bundle, caplog) -> None:
    options = EngineOptions(threads=1)
    load_engine(audio_bundle, "audio", "onnxruntime", options=options).close()
    old = _only(audio_bundle.root / "engines" / "onnx", "audio-fp32-*.onnx")
    _save_audio(audio_bundle, seed=9)  # retrained: new weights, new sha256 in the manifest
    fresh = Bundle.load(audio_bundle.root)
    with caplog.at_level(logging.WARNING):
        engine = load_engine(fresh, "audio", "onnxruntime", options=options)
    assert "removing stale onnx audio engine" in caplog.text
    assert not old.exists() and not old.with_suffix(".json").exists()
    assert Path(engine.metadata["path"]) != old
    assert engine.metadata["weights_sha256"] == fresh.network("audio")["sha256"]
    inputs = representative_inputs(fresh, "audio", 2)
    _assert_close(engine.infer(inputs), TorchEngine(fresh, "audio").infer(inputs), FP32_TOLERANCE)


@pytest.mark.slow  # exports and builds twice
def test_truncated_engine_is_rebuilt_with_a_warning(audio_bundle, caplog) -> None:
    options = EngineOptions(threads=1)
    path = Path(load_engine(audio_bundle, "audio", "onnxruntime", options=options).metadata["path"])
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level(logging.WARNING):
        engine = load_engine(audio_bundle, "audio", "onnxruntime", options=options)
    assert "damaged" in caplog.text and "truncated" in caplog.text
    assert Path(engine.metadata["path"]) == path and path.stat().st_size > len(whole) // 2
    inputs = representative_inputs(audio_bundle, "audio", 2)
    _assert_close(engine.infer(inputs), TorchEngine(audio_bundle, "audio").infer(inputs), FP32_TOLERANCE)


@pytest.mark.slow  # exports and builds twice
def test_engine_its_runtime_refuses_is_rebuilt_with_a_warning(audio_bundle, caplog) -> None:
    """Bytes that match the sidecar's hash but do not parse (written by something else): caught at load."""
    options = EngineOptions(threads=1)
    path = Path(load_engine(audio_bundle, "audio", "onnxruntime", options=options).metadata["path"])
    path.write_bytes(b"not an onnx graph")
    sidecar = path.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    record["artifact_sha256"] = __import__("hashlib").sha256(b"not an onnx graph").hexdigest()
    sidecar.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        engine = load_engine(audio_bundle, "audio", "onnxruntime", options=options)
    assert "cannot be loaded" in caplog.text
    assert engine.infer(representative_inputs(audio_bundle, "audio", 1))["scores"].shape == (1, 3)


def _fake_build(cache: EngineCache, key: EngineKey, payload: bytes = b"engine") -> Path:
    scratch = cache.scratch(key, ".plan")
    scratch.write_bytes(payload)
    return cache.store(key, scratch, ".plan", {"note": "fake"}).path


def test_cache_reports_foreign_engines_and_keeps_them(tmp_path: Path, caplog) -> None:
    cache = EngineCache(tmp_path)
    fields = {"weights_sha256": "w1", "tensorrt": "10.3.0", "gpu": "NVIDIA A10", "compute_capability": "8.6"}
    mine = EngineKey("tensorrt", "video", "fp16", fields)
    other_gpu = EngineKey("tensorrt", "video", "fp16", {**fields, "gpu": "NVIDIA H100", "compute_capability": "9.0"})
    foreign = _fake_build(cache, other_gpu)
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(mine, ".plan") is None
    assert "NVIDIA H100" in caplog.text and "built for" in caplog.text and foreign.exists()
    built = _fake_build(cache, mine)
    assert cache.lookup(mine, ".plan").path == built and cache.lookup(other_gpu, ".plan").path == foreign


def test_cache_treats_missing_or_unreadable_sidecars_as_damage(tmp_path: Path, caplog) -> None:
    cache = EngineCache(tmp_path)
    key = EngineKey("onnxruntime", "fusion", "int8", {"weights_sha256": "w", "onnxruntime": "1.31.1"})
    path = _fake_build(cache, key)
    path.with_suffix(".json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(key, ".plan") is None
    assert "unreadable sidecar" in caplog.text and not path.exists()
    path = _fake_build(cache, key)
    path.with_suffix(".json").unlink()  # as an interrupted build leaves it
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(key, ".plan") is None
    assert "interrupted" in caplog.text and not path.exists()


def test_cache_falls_back_to_the_user_cache_for_a_read_only_bundle(audio_bundle, tmp_path, monkeypatch) -> None:
    from streamrec.engines import cache as cache_module

    monkeypatch.setattr(cache_module.os, "access", lambda path, mode: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = cache_module.cache_root(audio_bundle)
    assert root.is_relative_to(tmp_path / "xdg" / "streamrec" / "engines")


# ---------------------------------------------------------------------------------------------------------------
# Backend choice and the build entry point


def _fake_tensorrt(monkeypatch, gpu: bool) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.9.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")


def test_auto_prefers_tensorrt_with_a_gpu(monkeypatch, caplog) -> None:
    _fake_tensorrt(monkeypatch, gpu=True)
    with caplog.at_level(logging.INFO, logger="streamrec.engines.loader"):
        assert choose_backend("auto") == "tensorrt"
    assert "TensorRT 10.9.0 on Fake GPU" in caplog.text


def test_auto_falls_back_to_onnxruntime_and_says_why(monkeypatch, caplog) -> None:
    _fake_tensorrt(monkeypatch, gpu=False)
    with caplog.at_level(logging.INFO, logger="streamrec.engines.loader"):
        assert choose_backend("auto") == "onnxruntime"
    assert "no CUDA GPU" in caplog.text
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streamrec.engines.loader"):
        assert choose_backend() == "onnxruntime"
    assert "TensorRT is not installed" in caplog.text


def test_auto_falls_back_to_torch_without_either(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with caplog.at_level(logging.INFO, logger="streamrec.engines.loader"):
        assert choose_backend("auto") == "torch"
    assert "ONNX Runtime is not installed" in caplog.text


def test_asking_for_an_unusable_or_unknown_backend_is_a_user_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineError, match="backend tensorrt is not available here: TensorRT is not installed"):
        choose_backend("tensorrt")
    with pytest.raises(EngineError, match="unknown backend 'tensor'"):
        choose_backend("tensor")


def test_build_engines_builds_every_network_and_reuses_the_cache(bundle: Bundle, ort_engines) -> None:
    built = build_engines(bundle.root, "onnxruntime", "fp32", progress=True, options=EngineOptions(threads=1))
    assert [b.kind for b in built] == ["audio", "video", "fusion"]
    assert all(b.path is not None and b.path.exists() and b.precision == "fp32" for b in built)
    assert {b.path for b in built} == {Path(e.metadata["path"]) for e in ort_engines.values()}  # reused, not rebuilt
    with pytest.raises(EngineError, match="no engines to build"):
        build_engines(bundle, "torch", progress=False)
    with pytest.raises(EngineError, match="unknown precision"):
        load_engine(bundle, "audio", "onnxruntime", "int4")


def test_importing_engines_does_not_import_tensorrt_or_initialise_cuda() -> None:
    code = (
        "import sys, engines, streamrec.engines.tensorrt_engine, torch; "
        "assert 'tensorrt' not in sys.modules; assert not torch.cuda.is_initialized()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# TensorRT: shape and batching logic without TensorRT, engines where TensorRT and a GPU exist


def test_profile_shapes_span_batch_1_to_max_with_fixed_other_axes(bundle: Bundle) -> None:
    spec = graph_spec(bundle, "fusion")
    shapes = profile_shapes(spec.inputs, spec.nominal, max_batch=16, opt_batch=4)
    assert shapes["frames"] == ((1, 2, 16), (4, 2, 16), (16, 2, 16))
    assert shapes["present"] == ((1, 2), (4, 2), (16, 2))
    audio = graph_spec(bundle, "audio")
    assert profile_shapes(audio.inputs, audio.nominal, 8)["logmel"] == ((1, 64, 101), (1, 64, 101), (8, 64, 101))
    with pytest.raises(ValueError, match="opt_batch"):
        profile_shapes(spec.inputs, spec.nominal, max_batch=4, opt_batch=8)
    with pytest.raises(ValueError, match="max_batch"):
        profile_shapes(spec.inputs, spec.nominal, max_batch=0)
    with pytest.raises(ValueError, match="contradicts"):
        profile_shapes(spec.inputs, {**spec.nominal, "frames": (3, 16)}, max_batch=4)


def test_calibration_batches_are_full_fixed_size_float32_batches() -> None:
    inputs = {"audio": np.arange(20 * 3, dtype=np.float64).reshape(20, 3), "present": np.ones((20, 2), np.int64)}
    batches = calibration_batches(inputs, batch_size=8)
    assert len(batches) == 2  # the 4 left over are dropped: calibration runs at one fixed shape
    assert all(
        b["audio"].shape == (8, 3) and b["audio"].dtype == np.float32 and b["audio"].flags.c_contiguous for b in batches
    )
    np.testing.assert_array_equal(batches[1]["audio"], inputs["audio"][8:16])
    assert len(calibration_batches(inputs, batch_size=4, max_batches=3)) == 3
    assert calibration_profile(batches[0])["present"] == ((8, 2), (8, 2), (8, 2))
    with pytest.raises(ValueError, match="do not fill one batch"):
        calibration_batches(inputs, batch_size=32)
    with pytest.raises(ValueError, match="disagree"):
        calibration_batches({"a": np.zeros((8, 1)), "b": np.zeros((9, 1))}, batch_size=4)


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engines_match_torch(bundle: Bundle, precision: str, tmp_path: Path) -> None:
    options = EngineOptions(cache_dir=tmp_path / "cache", max_batch=8)
    tolerance = {"fp32": 1e-3, "fp16": 5e-2}[precision]
    for kind in ("audio", "video", "fusion"):
        engine = load_engine(bundle, kind, "tensorrt", precision, options)
        meta = engine.metadata
        assert meta["precision"] == precision and meta["tensorrt"] and meta["gpu"] and meta["compute_capability"]
        assert meta["weights_sha256"] == bundle.network(kind)["sha256"]
        inputs = representative_inputs(bundle, kind, 8, seed=12)
        reference = TorchEngine(bundle, kind, device="cpu")
        for batch in (1, 8):
            feed = {k: v[:batch] for k, v in inputs.items()}
            _assert_close(engine.infer(feed), reference.infer(feed), tolerance)
        with pytest.raises(ValueError, match="batches of 1..8"):
            engine.infer({k: np.repeat(v[:1], 9, axis=0) for k, v in inputs.items()})
        engine.close()
    assert list((tmp_path / "cache" / "tensorrt").glob("timing-*.cache"))  # the timing cache was saved


@needs_tensorrt
def test_tensorrt_int8_engine_is_calibrated_and_cached(bundle: Bundle, tmp_path: Path) -> None:
    options = EngineOptions(cache_dir=tmp_path / "cache", max_batch=8, calibration_examples=32)
    engine = load_engine(bundle, "audio", "tensorrt", "int8", options)
    assert engine.metadata["calibration_batches"] == 4 and engine.metadata["check"]["top1_agreement"] >= 0.8
    plan = Path(engine.metadata["path"])
    again = load_engine(bundle, "audio", "tensorrt", "int8", options)
    assert Path(again.metadata["path"]) == plan  # reused from the cache


class _FakeTensorRT:
    """Just enough of the TensorRT 10 Python API to drive build_plan's calls without TensorRT (the runtime
    needs a GPU and is tested on one only). Records what the builder was asked to do."""

    __version__ = "10.9.0"

    def __init__(self, parse_ok: bool = True) -> None:
        fake = self
        self.calls: list[tuple] = []

        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        class ILogger:
            def __init__(self) -> None:
                pass

        ILogger.Severity = Severity
        self.ILogger = ILogger
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

        class Cache:
            def __init__(self, blob: bytes) -> None:
                self.blob = blob

            def serialize(self) -> bytes:
                return self.blob + b"+timed"

        class Config:
            def set_memory_pool_limit(self, pool, size) -> None:
                fake.calls.append(("workspace", size))

            def add_optimization_profile(self, profile) -> None:
                fake.calls.append(("profile", profile.shapes))

            def set_flag(self, flag) -> None:
                fake.calls.append(("flag", flag))

            def create_timing_cache(self, blob: bytes) -> Cache:
                return Cache(blob)

            def set_timing_cache(self, cache, ignore_mismatch) -> bool:
                self.cache = cache
                return True

            def get_timing_cache(self) -> Cache:
                return self.cache

        class Profile:
            def __init__(self) -> None:
                self.shapes = {}

            def set_shape(self, name, low, opt, high) -> None:
                self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

        class Builder:
            def __init__(self, logger) -> None:
                pass

            def create_network(self, flags: int) -> str:
                return "network"

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network, config) -> bytes:
                return b"plan"

        class OnnxParser:
            def __init__(self, network, logger) -> None:
                self.num_errors = 0 if parse_ok else 2

            def parse(self, data: bytes) -> bool:
                return parse_ok

            def get_error(self, i: int) -> str:
                return ["Unsupported operator STFT", "node 7 failed"][i]

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_build_plan_drives_the_tensorrt_builder(bundle: Bundle, tmp_path: Path, monkeypatch) -> None:
    from streamrec.engines.tensorrt_engine import BuildOptions, build_plan

    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(
        "streamrec.engines.tensorrt_engine.device_fingerprint",
        lambda: {"tensorrt": "10.9.0", "gpu": "Fake GPU", "compute_capability": "9.0"},
    )
    source, plan, timing = tmp_path / "fusion.onnx", tmp_path / "fusion.plan", tmp_path / "timing.cache"
    source.write_bytes(b"onnx")
    timing.write_bytes(b"cache")
    spec = graph_spec(bundle, "fusion")
    record = build_plan(source, plan, spec.inputs, spec.nominal, BuildOptions("fp16", max_batch=8), None, timing)
    assert plan.read_bytes() == b"plan" and timing.read_bytes() == b"cache+timed"
    assert ("flag", "FP16") in fake.calls and ("workspace", 1 << 30) in fake.calls
    (profile,) = [c[1] for c in fake.calls if c[0] == "profile"]
    assert profile["frames"] == ((1, 2, 16), (1, 2, 16), (8, 2, 16))
    assert record["precision"] == "fp16" and record["typing"] == "weak" and record["gpu"] == "Fake GPU"


def test_build_plan_logs_every_onnx_parser_error(bundle: Bundle, tmp_path: Path, monkeypatch, caplog) -> None:
    from streamrec.engines.tensorrt_engine import BuildOptions, build_plan

    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT(parse_ok=False))
    source = tmp_path / "audio.onnx"
    source.write_bytes(b"onnx")
    spec = graph_spec(bundle, "audio")
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="Unsupported operator STFT"):
        build_plan(source, tmp_path / "audio.plan", spec.inputs, spec.nominal, BuildOptions())
    assert "node 7 failed" in caplog.text and "Unsupported operator STFT" in caplog.text
