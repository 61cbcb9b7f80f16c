"""ONNX export of a bundle's networks: one graph per kind, returning its scores and its embedding.

    audio   logmel (batch, n_mels, frames) float32 -> scores (batch, classes), embedding (batch, audio_dim)
    video   images (batch, 3, size, size) float32 in [0, 1] -> logits (batch, classes), embedding (batch, video_dim)
    fusion  audio (batch, audio_dim), frames (batch, k, video_dim), present (batch, 2) -> logits (batch, classes)
    tagger  mel (batch, frames, 96) -> logits (batch, classes)

Batch is the one dynamic axis. The audio graph's frames axis is fixed to the window's frame count
(LogMelConfig.frames_per_window): with a symbolic frames axis the dynamo exporter translates the
attention network's ceil division (`-(-frames // patch)`) as a truncating Div, dropping the last patch
(measured: 10 patches instead of 11, embedding off by 0.17), and the TorchScript exporter does the same
even without it. A caller zero-pads a window shorter than that, as streamrec.core.audio_setup.take_windows does.
Audio `scores` are logits except for the "attention" architecture, whose forward()
already gives probabilities: `scores_are_probabilities` in the export metadata says which; with
`background` true their last column is "no instrument" rather than a class of the taxonomy.

Why the audio graph takes the log-mel and not the waveform: a front end inside the graph (STFT as a conv1d,
streamrec.bench.engines.ConvLogMel) was measured slower than streamrec.core.features.LogMel (torchaudio's
FFT) and less exact, in FP16 unusably so; LogMel is also exactly the module the networks were trained with and
stays FP32 whatever precision the engine runs in. So a caller computes the log-mel itself, with
LogMel(LogMelConfig(**engine.metadata["frontend"])), as streamrec.engines.networks.EngineNetworks does.
Measured figures: docs/engines.md#the-log-mel-front-end-outside-the-audio-graph.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamrec.core.audio_setup import AudioSetup
from streamrec.core.bundle import Bundle
from streamrec.core.dataset import DecodeSpec, load_dataset
from streamrec.core.features import FrameConfig, LogMel, LogMelConfig, frames_to_tensor
from streamrec.core.graphs import GraphSpec, example_inputs, graph_metadata, graph_module, graph_spec
from streamrec.core.models.tagger import MusicnnFrontend

# onnxruntime is imported where an export is checked: it is an optional backend.

log = logging.getLogger(__name__)

OPSET = 18
# Fusion inputs draw their frame embeddings from at most this many images run through the video network.
MAX_DISTINCT_FRAMES = 8
# Part of every cache key: bump it when the exported graphs change (names, outputs, wrappers).
EXPORT_FORMAT = 1
# Export is checked against torch on a small batch; beyond this (relative to the largest output, at least 1)
# the exporter is considered to have failed. Float32 reorderings stay near 1e-5.
EXPORT_TOLERANCE = 1e-3


def _dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for s in (*spec.inputs, *spec.outputs):
        axes[s.name] = {i: ("batch" if i == 0 else f"{s.name}_{i}") for i, d in enumerate(s.shape) if d is None}
    return axes


def _torch_outputs(module: nn.Module, spec: GraphSpec, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        result = module(*(torch.from_numpy(inputs[s.name]) for s in spec.inputs))
    result = result if isinstance(result, tuple) else (result,)
    return [r.numpy() for r in result]


def _relative_diff(path: Path, spec: GraphSpec, inputs: dict[str, np.ndarray], expected: list[np.ndarray]) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run([s.name for s in spec.outputs], inputs)
    return max(float(np.abs(g - e).max()) / max(1.0, float(np.abs(e).max())) for g, e in zip(got, expected))


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silences the exporters' progress prints, warnings and INFO logs (hundreds of lines per graph); what
    matters is logged by export_onnx itself."""
    noisy = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in noisy]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in noisy:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(noisy, levels):
                logger.setLevel(level)


def export_onnx(bundle: Bundle, kind: str, path: Path, opset: int = OPSET) -> dict[str, Any]:
    """Writes the kind's graph to `path` and returns its metadata (specs, exporter, the check against torch).

    The dynamo exporter is tried first; when it fails, or its graph disagrees with torch on a batch of 3
    (a batch size it did not trace with), the TorchScript exporter is used and the reason logged.
    """
    spec = graph_spec(bundle, kind)
    module = graph_module(bundle, kind)
    trace_inputs = example_inputs(spec, batch=2, seed=0)
    check_inputs = example_inputs(spec, batch=3, seed=1)
    expected = _torch_outputs(module, spec, check_inputs)
    args = tuple(torch.from_numpy(trace_inputs[s.name]) for s in spec.inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for dynamo in (True, False):
        exporter = "dynamo" if dynamo else "torchscript"
        try:
            with quiet_exporter():
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    input_names=[s.name for s in spec.inputs],
                    output_names=[s.name for s in spec.outputs],
                    dynamic_axes=_dynamic_axes(spec),
                    opset_version=opset,
                    dynamo=dynamo,
                    external_data=False,
                    verbose=False,
                )
            diff = _relative_diff(path, spec, check_inputs, expected)
        except Exception as e:  # any exporter failure: try the other one, then report both
            failures.append(f"{exporter}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            log.warning("%s exporter failed for the %s network (%s)", exporter, kind, failures[-1])
            continue
        if diff > EXPORT_TOLERANCE:
            failures.append(f"{exporter}: outputs differ from torch by {diff:.2g}")
            log.warning("%s export of the %s network differs from torch by %.2g", exporter, kind, diff)
            continue
        log.info(
            "exported the %s network with the %s exporter (max diff vs torch %.2g of the largest output)",
            kind,
            exporter,
            diff,
        )
        return {**graph_metadata(bundle, kind), "exporter": exporter, "opset": opset, "export_relative_diff": diff}
    path.unlink(missing_ok=True)
    raise RuntimeError(f"cannot export the {kind} network of {bundle.root} to ONNX: {'; '.join(failures)}")


# ---------------------------------------------------------------------------------------------------------------
# Representative inputs: calibration batches for INT8, and "real-ish" inputs for parity checks and benchmarks.


def synthetic_waveforms(count: int, config: LogMelConfig, seed: int = 0) -> np.ndarray:
    """(count, window_samples) float32: harmonic tones of random pitch, level and decay over a little noise,
    plus one silent window and one of noise (the extremes a live stream meets)."""
    rng = np.random.default_rng(seed)
    n = config.window_samples
    t = np.arange(n) / config.sample_rate
    out = np.zeros((count, n), np.float32)
    for i in range(count):
        if i % 8 == 1:
            continue  # silence
        level = 10 ** rng.uniform(-2.5, -0.3)
        if i % 8 == 2:
            out[i] = level * 0.3 * rng.standard_normal(n)
            continue
        f0 = rng.uniform(60, 1200)
        harmonics = rng.uniform(0, 1, 8) / np.arange(1, 9) ** rng.uniform(0.5, 2)
        tone = sum(
            h * np.sin(2 * np.pi * f0 * (j + 1) * t + rng.uniform(0, 2 * np.pi))
            for j, h in enumerate(harmonics)
            if f0 * (j + 1) < config.sample_rate / 2
        )
        envelope = np.exp(-t * rng.uniform(0, 4))
        signal = tone * envelope / max(1e-6, float(np.abs(tone).max())) + 0.01 * rng.standard_normal(n)
        out[i] = np.clip(level * signal, -1, 1)
    return out


def synthetic_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """(count, 3, size, size) float32 in [0, 1]: smooth colour fields with a few sharp shapes and sensor noise,
    closer to video frames than uniform noise is."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 3, 4, 4), dtype=np.float32))
    images = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).numpy()
    yy, xx = np.mgrid[0:size, 0:size]
    for image in images:
        for _ in range(rng.integers(1, 5)):
            cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(size // 16, size // 3)
            image[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random((3, 1), dtype=np.float32)
    images += rng.normal(0, 0.02, images.shape).astype(np.float32)
    return np.clip(images, 0, 1)


def _dataset_media(bundle: Bundle, kind: str, data: Path, count: int) -> np.ndarray:
    """Up to `count` audio windows (n, samples) or frames (n, 3, size, size) from a dataset's train split."""
    if kind == "audio":
        config = AudioSetup.from_dict(bundle.network("audio")["setup"]).frontend
        loaded = load_dataset(
            data, "train", DecodeSpec(sample_rate=config.sample_rate, video=False), bundle.classes, progress=False
        )
        n, windows = config.window_samples, []
        for clip in loaded.clips:
            if clip.audio is not None:
                for start in range(0, max(1, len(clip.audio) - n + 1), n):
                    piece = np.zeros(n, np.float32)
                    chunk = clip.audio[start : start + n]
                    piece[: len(chunk)] = chunk
                    windows.append(piece)
        return np.stack(windows[:count]) if windows else np.zeros((0, n), np.float32)
    frames_config = FrameConfig(**bundle.network("video").get("frames", {}))
    loaded = load_dataset(data, "train", DecodeSpec(frames=frames_config), bundle.classes, progress=False)
    frames = [f for clip in loaded.clips if clip.frames is not None for f in clip.frames][:count]
    return frames_to_tensor(np.stack(frames)).numpy() if frames else np.zeros((0, 3, 1, 1), np.float32)


def _audio_windows(bundle: Bundle, count: int, seed: int, data: Path | None) -> np.ndarray:
    """`count` windows (count, samples) for the audio network and the tagger: a dataset's train windows first,
    synthetic tones, noise and silence for the rest."""
    config = AudioSetup.from_dict(bundle.network("audio")["setup"]).frontend
    waves = _dataset_media(bundle, "audio", data, count) if data is not None else np.zeros((0, 0), np.float32)
    if len(waves) < count:
        synthetic = synthetic_waveforms(count - len(waves), config, seed)
        waves = np.concatenate([waves, synthetic]) if len(waves) else synthetic
    return waves


def representative_inputs(
    bundle: Bundle, kind: str, count: int, seed: int = 0, data: Path | None = None
) -> dict[str, np.ndarray]:
    """`count` examples of the graph's inputs (batch axis first) that look like what the engine will see.

    audio: log-mel of tones, noise and silence through the bundle's own front end; video: synthetic
    frames; fusion: embeddings of those through the bundle's audio and video networks, with every
    presence pattern. With `data` (a dataset in the docs/dataset.md layout), audio windows and frames of its
    train split are used first and the synthetic ones fill up the rest.
    """
    spec = graph_spec(bundle, kind)
    if kind == "audio":
        with torch.no_grad():
            waves = torch.from_numpy(_audio_windows(bundle, count, seed, data))
            return {"logmel": LogMel(LogMelConfig(**spec.frontend))(waves).numpy()}
    if kind == "video":
        size = spec.nominal["images"][-1]
        images = _dataset_media(bundle, kind, data, count) if data is not None else np.zeros((0, 3, size, size))
        if len(images) < count:
            synthetic = synthetic_images(count - len(images), size, seed)
            images = np.concatenate([images.astype(np.float32), synthetic]) if len(images) else synthetic
        return {"images": images.astype(np.float32)}
    if kind == "tagger":  # the tagger's own front end on the audio network's windows (the tagger takes the same)
        with torch.no_grad():
            return {"mel": MusicnnFrontend()(torch.from_numpy(_audio_windows(bundle, count, seed, data))).numpy()}
    k, video_dim = spec.nominal["frames"]
    rng = np.random.default_rng(seed)
    audio = _embeddings(bundle, "audio", count, seed, data, spec.nominal["audio"][0], rng)
    # Frame embeddings of a few distinct images drawn into the k slots: the video trunk is the slow part.
    distinct = _embeddings(bundle, "video", min(count * k, MAX_DISTINCT_FRAMES), seed, data, video_dim, rng)
    frames = distinct[rng.integers(0, len(distinct), count * k)].reshape(count, k, video_dim)
    present = np.array([[1, 1], [1, 0], [0, 1]], np.float32)[np.arange(count) % 3]
    return {"audio": audio * present[:, :1], "frames": frames * present[:, 1:, None], "present": present}


@functools.lru_cache(maxsize=4)
def _reference_module(root: Path, kind: str, sha256: str) -> nn.Module:
    """The torch network behind fusion's representative inputs, loaded once per weights (calibration, checks and
    benchmarks ask for it repeatedly)."""
    return graph_module(Bundle.load(root), kind)


def _embeddings(
    bundle: Bundle, kind: str, count: int, seed: int, data: Path | None, dim: int, rng: np.random.Generator
) -> np.ndarray:
    """(count, dim) embeddings of representative inputs through the bundle's network of `kind`; ReLU-like
    random features when the bundle lacks that network."""
    if not bundle.has(kind):
        return np.maximum(rng.standard_normal((count, dim)), 0).astype(np.float32)
    module = _reference_module(bundle.root, kind, bundle.network(kind)["sha256"])
    inputs = representative_inputs(bundle, kind, count, seed, data)
    spec = graph_spec(bundle, kind)
    chunks = []
    for start in range(0, count, 16):  # bounded memory for video trunks
        batch = {name: value[start : start + 16] for name, value in inputs.items()}
        chunks.append(_torch_outputs(module, spec, batch)[-1])
    return np.concatenate(chunks).astype(np.float32)
