"""What every inference engine offers: named tensor specs in and out, and `infer` on numpy arrays.

An engine runs one network of a model bundle (kind "audio", "video" or "fusion"); the graphs each kind
exposes are described in streamrec.engines.export. Backends: "torch" (the reference), "onnxruntime" (CPU),
"tensorrt" (NVIDIA GPU), and "triton" (a Triton Inference Server over gRPC, streamrec.engines.triton_client).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from streamrec.core.errors import UserError
from streamrec.core.graphs import TensorSpec

BACKENDS = ("torch", "onnxruntime", "tensorrt")
# Not among BACKENDS: the networks run on a Triton server (streamrec.engines.triton_client), not in this process.
TRITON = "triton"
PRECISIONS = ("fp32", "fp16", "int8")


class EngineError(UserError):
    """An engine that cannot be had as asked: unknown or unavailable backend, unsupported precision."""


@runtime_checkable
class Engine(Protocol):
    """One network behind one backend. `infer` takes and returns arrays keyed by the specs' names.

    `metadata` holds what a caller needs besides tensors: "scores_are_probabilities" (audio "attention"
    networks output probabilities, every other graph logits), "background" (audio: the last score column
    is "no instrument"), "frontend" (the audio LogMelConfig as a dict), "precision", "weights_sha256",
    and for built engines where and how they were built ("path", "check", TensorRT's device fields).
    """

    backend: str
    kind: str
    metadata: dict

    @property
    def input_spec(self) -> tuple[TensorSpec, ...]: ...

    @property
    def output_spec(self) -> tuple[TensorSpec, ...]: ...

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


StatusListener = Callable[[str, str], None]  # (state, detail) of an engine's server: "reconnecting" or "started"


@runtime_checkable
class ReportsStatus(Protocol):
    """An engine, or networks, whose server can go away and come back (the triton backend): the listener hears
    "reconnecting" when requests start failing and "started" when they succeed again."""

    def set_status_listener(self, listener: StatusListener | None) -> None: ...


def check_inputs(kind: str, spec: tuple[TensorSpec, ...], inputs: Mapping[str, np.ndarray]) -> None:
    """Raises ValueError naming the first input that is missing or has the wrong rank or fixed dimensions."""
    missing = [s.name for s in spec if s.name not in inputs]
    if missing:
        raise ValueError(f"{kind} engine needs inputs {', '.join(missing)}; got {', '.join(inputs) or 'none'}")
    shapes = {s.name: tuple(np.shape(inputs[s.name])) for s in spec}
    for s in spec:
        if not s.matches(shapes[s.name]):
            raise ValueError(f"{kind} engine input {s.name} has shape {shapes[s.name]}; expected {s.describe()}")
    batches = {shape[0] for shape in shapes.values()}
    if len(batches) > 1:
        raise ValueError(f"{kind} engine inputs disagree on the batch size: {sorted(batches)}")


def log_io(
    logger: logging.Logger,
    backend: str,
    kind: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    detail: str = "",
) -> None:
    """The one line every engine logs when loaded, so a run's log shows what each network expects."""
    logger.info(
        "%s %s engine%s: in %s; out %s",
        backend,
        kind,
        f" ({detail})" if detail else "",
        ", ".join(s.describe() for s in inputs),
        ", ".join(s.describe() for s in outputs),
    )


class EngineBase:
    """The spec properties shared by the engine implementations; they set `_inputs` and `_outputs`."""

    _inputs: tuple[TensorSpec, ...]
    _outputs: tuple[TensorSpec, ...]

    @property
    def input_spec(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def output_spec(self) -> tuple[TensorSpec, ...]:
        return self._outputs
