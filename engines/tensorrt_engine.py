"""TensorRT: building serialized engines (plans) from the exported ONNX graphs, and running them on torch CUDA tensors.

Nothing here imports tensorrt or touches CUDA at import time, so `import engines` works everywhere. The
shape and batching logic (`profile_shapes`, `calibration_batches`) is pure and tested without a GPU.

Precision, by TensorRT release:
  * TensorRT 8.6-10.x (weakly typed builds): FP16 and INT8 are builder flags; INT8 is calibrated with an
    IInt8EntropyCalibrator2 fed batches of representative inputs (its cache is kept beside the plan).
  * TensorRT 11+ removed those flags and calibrators (networks are strongly typed): FP16 builds from an
    FP16 ONNX made with ModelOpt AutoCast (`nvidia-modelopt`), and INT8 from a QDQ ONNX made by ONNX
    Runtime's static quantization with the same representative batches (explicit quantization).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamrec.engines.base import EngineBase, EngineError, TensorSpec, check_inputs, log_io

# tensorrt (and modelopt) are imported where they are used: they exist only on NVIDIA GPU hosts.

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 1 << 30  # 1 GiB of builder scratch memory: plenty for these networks
DEFAULT_MAX_BATCH = 16  # eval runs 10 audio crops per clip; frames come in by the handful
DEFAULT_OPT_BATCH = 1  # the live pipeline's batch: kernels are tuned for it
CALIBRATION_BATCH = 8


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT importable and a CUDA GPU visible to torch."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or a broken install failing to load its libraries
        return False, f"TensorRT is not installed ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return False, f"TensorRT {getattr(trt, '__version__', '?')} is installed but no CUDA GPU is visible"
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}"


def device_fingerprint() -> dict[str, str]:
    """What a plan is specific to besides the weights: TensorRT version, GPU model, compute capability."""
    import tensorrt as trt

    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


# ---------------------------------------------------------------------------------------------------------------
# Pure logic: optimisation profile shapes and calibration batches.


def profile_shapes(
    inputs: Sequence[TensorSpec],
    nominal: Mapping[str, Sequence[int]],
    max_batch: int,
    opt_batch: int = DEFAULT_OPT_BATCH,
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes per input for one optimisation profile: batch 1..max_batch, tuned for opt_batch;
    every other axis fixed to the graph's nominal shape (streamrec.engines.export leaves only the batch dynamic)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"opt_batch must be within 1..{max_batch}, got {opt_batch}")
    shapes = {}
    for spec in inputs:
        rest = tuple(int(d) for d in nominal[spec.name])
        if len(rest) != len(spec.shape) - 1:
            raise ValueError(f"nominal shape {rest} of {spec.name} does not fit {spec.describe()}")
        for axis, (declared, size) in enumerate(zip(spec.shape[1:], rest), start=1):
            if declared is not None and declared != size:
                raise ValueError(f"nominal size {size} of axis {axis} of {spec.name} contradicts {spec.describe()}")
        shapes[spec.name] = ((1, *rest), (opt_batch, *rest), (max_batch, *rest))
    return shapes


def calibration_batches(
    inputs: Mapping[str, np.ndarray], batch_size: int = CALIBRATION_BATCH, max_batches: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Splits representative inputs (batch axis first) into full batches of `batch_size`, contiguous float32.

    The remainder is dropped: an INT8 calibrator feeds one fixed shape (the calibration profile's). Raises
    ValueError when the inputs disagree on their count or do not fill one batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    counts = {name: len(value) for name, value in inputs.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"calibration inputs disagree on their count: {counts}")
    count = next(iter(counts.values()))
    n_batches = count // batch_size if max_batches is None else min(count // batch_size, max_batches)
    if n_batches < 1:
        raise ValueError(f"{count} calibration examples do not fill one batch of {batch_size}")
    return [
        {
            name: np.ascontiguousarray(value[i * batch_size : (i + 1) * batch_size], dtype=np.float32)
            for name, value in inputs.items()
        }
        for i in range(n_batches)
    ]


def calibration_profile(batch: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """The profile INT8 calibration runs in: exactly the calibration batches' shape (min = opt = max)."""
    return {name: (tuple(v.shape),) * 3 for name, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------------
# Building.


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp32"  # fp32 | fp16 | int8
    max_batch: int = DEFAULT_MAX_BATCH
    opt_batch: int = DEFAULT_OPT_BATCH
    workspace_bytes: int = WORKSPACE_BYTES


_TRT_LOGGER = None


def _logger():
    """A TensorRT logger that forwards to Python logging (one per process: TensorRT treats it as a singleton)."""
    import tensorrt as trt

    global _TRT_LOGGER
    if _TRT_LOGGER is None:

        class _Forward(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity, msg: str) -> None:
                S = trt.ILogger.Severity
                level = {
                    S.INTERNAL_ERROR: logging.ERROR,
                    S.ERROR: logging.ERROR,
                    S.WARNING: logging.WARNING,
                    S.INFO: logging.DEBUG,
                }.get(severity, logging.NOTSET)
                if level:
                    log.log(level, "TensorRT: %s", msg)

        _TRT_LOGGER = _Forward()
    return _TRT_LOGGER


def _weakly_typed(trt) -> bool:
    return hasattr(trt.BuilderFlag, "FP16")


def _make_calibrator(trt, batches: list[dict[str, np.ndarray]], cache_path: Path):
    """An IInt8EntropyCalibrator2 handing TensorRT one CUDA copy of each batch in turn."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._current: dict[str, torch.Tensor] = {}  # kept alive until TensorRT asks for the next batch

        def get_batch_size(self) -> int:
            return len(next(iter(batches[0].values())))

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._current = {name: torch.from_numpy(batch[name]).cuda() for name in names}
            return [self._current[name].data_ptr() for name in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.exists() else None

        def write_calibration_cache(self, cache) -> None:
            cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def _strongly_typed_source(
    trt, onnx_path: Path, precision: str, batches: list[dict[str, np.ndarray]] | None, scratch: Path
) -> Path:
    """TensorRT 11+: the ONNX that carries the precision itself (FP16 by ModelOpt AutoCast, INT8 as QDQ)."""
    if precision == "fp16":
        try:
            import modelopt.onnx.autocast as autocast
        except ImportError as e:
            raise EngineError(
                f"TensorRT {trt.__version__} builds FP16 only from an FP16 ONNX graph; install "
                "nvidia-modelopt (ModelOpt AutoCast makes it) or use --precision fp32"
            ) from e
        import onnx

        onnx.save(
            autocast.convert_to_mixed_precision(
                onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True
            ),
            str(scratch),
        )
        return scratch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches or [])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    # Symmetric QDQ is what TensorRT's explicit quantization accepts.
    quantize_static(
        str(onnx_path),
        str(scratch),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return scratch


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    inputs: Sequence[TensorSpec],
    nominal: Mapping[str, Sequence[int]],
    options: BuildOptions,
    calibration: list[dict[str, np.ndarray]] | None = None,
    timing_cache: Path | None = None,
    calibration_cache: Path | None = None,
) -> dict[str, Any]:
    """Builds a serialized engine from an ONNX graph into `plan_path`; returns what the sidecar records.

    Every ONNX parser error is logged; the build fails with the first one. INT8 needs `calibration`
    batches (see calibration_batches). The timing cache is read if present and written back after the build.
    """
    import tensorrt as trt

    logger = _logger()
    weak = _weakly_typed(trt)
    if options.precision == "int8" and not calibration:
        raise ValueError("an INT8 TensorRT build needs calibration batches")
    source = onnx_path
    if not weak and options.precision != "fp32":
        source = _strongly_typed_source(
            trt,
            onnx_path,
            options.precision,
            calibration,
            plan_path.with_name(plan_path.name + f".{options.precision}.onnx"),
        )
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # TensorRT 8.x still needs explicit batch asked for
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    try:
        parsed = parser.parse(source.read_bytes())
    finally:
        if source != onnx_path:
            source.unlink(missing_ok=True)
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    for error in errors:
        log.error("TensorRT ONNX parser: %s", error)
    if not parsed:
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    shapes = profile_shapes(inputs, nominal, options.max_batch, options.opt_batch)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if weak and options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 builds too: layers without INT8 kernels fall back to FP16
    if weak and options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        # A local reference keeps the Python calibrator alive for the whole build (TensorRT calls back into it).
        calibrator = _make_calibrator(trt, calibration, calibration_cache or plan_path.with_suffix(".calib"))
        config.int8_calibrator = calibrator
        calibration_shapes = builder.create_optimization_profile()
        for name, (low, opt, high) in calibration_profile(calibration[0]).items():
            calibration_shapes.set_shape(name, low, opt, high)
        config.set_calibration_profile(calibration_shapes)

    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.exists() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):  # False: a cache from another device/version is refused
            log.warning("TensorRT refused the timing cache %s; timing from scratch", timing_cache)
            config.set_timing_cache(config.create_timing_cache(b""), False)

    log.info(
        "building TensorRT %s engine from %s (batch 1..%d, opt %d)",
        options.precision,
        onnx_path.name,
        options.max_batch,
        options.opt_batch,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (its errors are in the log above)")
    plan_path.write_bytes(bytes(serialized))
    if timing_cache is not None:
        tmp = timing_cache.with_name(f".{timing_cache.name}.{os.getpid()}.tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        os.replace(tmp, timing_cache)
    return {
        **device_fingerprint(),
        "precision": options.precision,
        "typing": "weak" if weak else "strong",
        "profile": {name: [list(s) for s in shape] for name, shape in shapes.items()},
        "calibration_batches": len(calibration or []),
    }


# ---------------------------------------------------------------------------------------------------------------
# Running.


class TensorRTEngine(EngineBase):
    """A deserialized plan run on one CUDA stream, with torch CUDA tensors as input and output buffers."""

    backend = "tensorrt"

    def __init__(self, plan_path: Path, kind: str, metadata: Mapping[str, Any] | None = None) -> None:
        import tensorrt as trt

        self.kind, self.path = kind, Path(plan_path)
        self.metadata = dict(metadata or {})
        self._runtime = trt.Runtime(_logger())
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT cannot deserialize {plan_path} (another TensorRT version or GPU?)")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._device = torch.device("cuda")
        inputs, outputs, self._max_batch = [], [], None
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(None if d < 0 else int(d) for d in self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(TensorSpec(name, shape, dtype))
                high = self._engine.get_tensor_profile_shape(name, 0)[2]
                self._max_batch = int(high[0]) if self._max_batch is None else min(self._max_batch, int(high[0]))
            else:
                outputs.append(TensorSpec(name, shape, dtype))
        self._inputs, self._outputs = tuple(inputs), tuple(outputs)
        log_io(
            log,
            self.backend,
            kind,
            self._inputs,
            self._outputs,
            f"{self.metadata.get('precision', '?')}, batch up to {self._max_batch}, {torch.cuda.get_device_name()}",
        )

    def infer_tensors(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """CUDA tensors in, CUDA tensors out (no host copies: chain a GPU front end or another engine)."""
        batch = int(next(iter(inputs.values())).shape[0])
        if not 1 <= batch <= (self._max_batch or batch):
            raise ValueError(f"{self.kind} TensorRT engine takes batches of 1..{self._max_batch}, got {batch}")
        with torch.cuda.stream(self._stream):
            feeds = {}
            for spec in self._inputs:
                tensor = inputs[spec.name].to(self._device, getattr(torch, spec.dtype), non_blocking=True).contiguous()
                feeds[spec.name] = tensor  # referenced until the stream is synchronised below
                self._context.set_input_shape(spec.name, tuple(tensor.shape))
                self._context.set_tensor_address(spec.name, tensor.data_ptr())
            results = {}
            for spec in self._outputs:
                shape = tuple(self._context.get_tensor_shape(spec.name))
                results[spec.name] = torch.empty(shape, dtype=getattr(torch, spec.dtype), device=self._device)
                self._context.set_tensor_address(spec.name, results[spec.name].data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run the {self.kind} engine {self.path}")
        self._stream.synchronize()
        return results

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.kind, self._inputs, inputs)
        tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in inputs.items()}
        return {name: t.float().cpu().numpy() for name, t in self.infer_tensors(tensors).items()}

    def close(self) -> None:
        self._context = None
        self._engine = None
