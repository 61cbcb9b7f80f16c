"""A Triton Inference Server model repository for a bundle: `streamrec engines triton OUT`.

    OUT/
      streamrec_audio/config.pbtxt      logmel -> scores, embedding
      streamrec_audio/1/model.onnx      (model.plan with format "tensorrt")
      streamrec_video/...               images -> logits, embedding
      streamrec_fusion/...              audio, frames, present -> logits
      streamrec_tagger/...              mel -> logits (bundles with a tagger)

Each model is one graph of streamrec.core.graphs, the same file the in-process engines run: the exported ONNX
(Triton's onnxruntime backend) or, where TensorRT is present, a TensorRT plan built by streamrec.engines.loader
(Triton's tensorrt backend; a plan only loads in a server with the same TensorRT version and GPU model).
config.pbtxt states the tensors without the batch axis (Triton adds it under max_batch_size), dynamic
batching (preferred sizes, queue delay) and an instance group; its parameters carry the weights' hash, which
streamrec.engines.triton_client checks against the client's bundle so that a stale repository is never used.

The log-mel front end is not in the repository: the audio graph takes the log-mel, which every client computes
itself (streamrec.engines.export says why the front end stays outside the graph; over the network the log-mel,
64 x 101 floats, is also smaller than the 1 s waveform it comes from at 22.05 kHz).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from streamrec.core.bundle import Bundle
from streamrec.core.graphs import TensorSpec, graph_spec
from streamrec.engines.base import EngineError
from streamrec.engines.export import EXPORT_FORMAT
from streamrec.engines.loader import EngineOptions, build_engines
from streamrec.engines.tensorrt_engine import DEFAULT_MAX_BATCH, DEFAULT_OPT_BATCH, tensorrt_status

log = logging.getLogger(__name__)

MODEL_PREFIX = "streamrec_"  # Triton model names: streamrec_audio, streamrec_video, streamrec_fusion
MODEL_VERSION = 1
FORMATS = ("auto", "onnx", "tensorrt")
# Triton's data types for the numpy dtypes our graphs use (model_config.proto DataType).
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
# The wire names of the same types (tritonclient InferInput).
WIRE_DTYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32"}


def model_name(kind: str) -> str:
    return MODEL_PREFIX + kind


@dataclass(frozen=True)
class RepositoryOptions:
    """How the served models batch and run. queue_delay_us: how long Triton's dynamic batcher may hold a request
    to fill a preferred batch (1 ms against a 500 ms hop: free latency for batches across ingest hosts)."""

    format: str = "auto"  # auto: TensorRT plans where TensorRT and a GPU are present, else ONNX
    precision: str = "fp32"  # TensorRT plans only; the ONNX models are the FP32 export
    max_batch: int = DEFAULT_MAX_BATCH
    # Batches the dynamic batcher tries to form within the queue delay. Not 1: a preferred size of 1 would send
    # every lone request at once and never wait for a second one. Empty: 4, 8 and max_batch.
    preferred_batches: tuple[int, ...] = ()
    queue_delay_us: int = 1000
    instances: int = 1  # model instances per device

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise EngineError(f"unknown repository format {self.format!r}; choose {', '.join(FORMATS)}")
        if self.max_batch < 1 or self.instances < 1 or self.queue_delay_us < 0:
            raise EngineError("max_batch and instances must be >= 1, queue_delay_us >= 0")
        if any(not 1 <= b <= self.max_batch for b in self.preferred_batches):
            raise EngineError(f"preferred batch sizes must be within 1..{self.max_batch}")

    def preferred(self) -> tuple[int, ...]:
        chosen = self.preferred_batches or (4, 8, self.max_batch)
        return tuple(sorted({b for b in chosen if 1 <= b <= self.max_batch}))


def _dims(spec: TensorSpec) -> str:
    if spec.shape[0] is not None or any(d is None for d in spec.shape[1:]):
        raise ValueError(f"{spec.describe()}: Triton batching needs a dynamic batch axis and fixed other axes")
    return ", ".join(str(d) for d in spec.shape[1:])


def _tensor(spec: TensorSpec) -> str:
    return (
        f'  {{\n    name: "{spec.name}"\n    data_type: {TRITON_DTYPES[spec.dtype]}\n    dims: [ {_dims(spec)} ]\n  }}'
    )


def model_config(bundle: Bundle, kind: str, plan: bool, options: RepositoryOptions) -> str:
    """config.pbtxt of one model (protobuf text format of Triton's ModelConfig)."""
    spec = graph_spec(bundle, kind)
    engine = 'platform: "tensorrt_plan"' if plan else 'backend: "onnxruntime"'
    filename = "model.plan" if plan else "model.onnx"
    device = "KIND_GPU" if plan else "KIND_CPU"
    parameters = {
        "streamrec_kind": kind,
        "weights_sha256": bundle.network(kind)["sha256"],
        "export_format": str(EXPORT_FORMAT),
        "precision": options.precision if plan else "fp32",
    }
    lines = [
        f'name: "{model_name(kind)}"',
        engine,
        f'default_model_filename: "{filename}"',
        f"max_batch_size: {options.max_batch}",
        "input [\n" + ",\n".join(_tensor(s) for s in spec.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor(s) for s in spec.outputs) + "\n]",
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in options.preferred())} ]\n"
        f"  max_queue_delay_microseconds: {options.queue_delay_us}\n}}",
        f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {device}\n  }}\n]",
        f"version_policy: {{ specific: {{ versions: [ {MODEL_VERSION} ] }} }}",
    ]
    lines += [f'parameters {{\n  key: "{k}"\n  value: {{ string_value: "{v}" }}\n}}' for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def use_plans(requested: str) -> bool:
    """Whether the repository holds TensorRT plans: "auto" asks tensorrt_status, "tensorrt" insists on it."""
    if requested == "onnx":
        return False
    usable, why = tensorrt_status()
    if requested == "tensorrt" and not usable:
        raise EngineError(f"TensorRT plans cannot be built here: {why}; use --format onnx")
    log.info("Triton repository with %s: %s", "TensorRT plans" if usable else "ONNX models", why)
    return usable


def write_repository(
    bundle: Bundle | str | Path | None, out: Path, options: RepositoryOptions | None = None, progress: bool = True
) -> list[Path]:
    """Writes one Triton model per network of the bundle into `out` (existing streamrec_* models replaced, anything
    else left alone); returns the model directories. Engines come from the bundle's engine cache."""
    options = options or RepositoryOptions()
    loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    plan = use_plans(options.format)
    engine_options = EngineOptions(max_batch=options.max_batch, opt_batch=min(DEFAULT_OPT_BATCH, options.max_batch))
    built = build_engines(
        loaded,
        "tensorrt" if plan else "onnxruntime",
        options.precision if plan else "fp32",
        progress=progress,
        options=engine_options,
    )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for engine in built:
        if engine.path is None:  # every non-torch engine comes from a cached file
            raise RuntimeError(f"the {engine.kind} engine has no file to put in the repository")
        model = out / model_name(engine.kind)
        if model.exists():
            shutil.rmtree(model)
        version = model / str(MODEL_VERSION)
        version.mkdir(parents=True)
        shutil.copyfile(engine.path, version / ("model.plan" if plan else "model.onnx"))
        (model / "config.pbtxt").write_text(model_config(loaded, engine.kind, plan, options), encoding="utf-8")
        written.append(model)
    return written
