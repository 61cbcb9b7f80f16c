"""ONNX Runtime on the CPU: session tuning and INT8 quantization of exported graphs.

INT8 here is dynamic quantization of MatMul/Gemm weights only (activations quantized per call): quantizing
convolutions too (ConvInteger, or static QDQ) was measured several times slower on the CPU and, for the frame
network, lost accuracy, while INT8 matrix products pay off for the fully connected fusion network (audio and
video stay within noise of FP32). A build compares the INT8 graph with torch on representative inputs and
records the result in its sidecar ("check"). Measured figures: docs/engines.md#int8-on-onnx-runtime-what-is-quantized.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from streamrec.engines.base import EngineBase, EngineError, TensorSpec, check_inputs, log_io

# onnxruntime is imported where it is used: it is an optional backend (a TensorRT host may go without it).

log = logging.getLogger(__name__)

# What quantize_dynamic touches: see the module docstring for why convolutions are left out.
INT8_OP_TYPES = ("MatMul", "Gemm")
# 7-bit weights. Without VNNI (AVX2-only CPUs, e.g. the AMD machines this project runs on) ORT's u8s8 kernels
# use VPMADDUBSW, whose int16 sums saturate with full-range weights: measured there, the audio embedding was
# off by 0.64 (of 5.2) against torch. Reduced range avoids the saturation on every x86 CPU, for a 1-bit loss
# of weight precision that the check against torch below still bounds (ORT's quantization guide, "saturation").
INT8_REDUCE_RANGE = True
# INT8 is offered only where it was qualified: per CPU family (cpu_family()), the networks whose INT8 engine
# matched FP32 within INT8_F1_TOLERANCE macro F1 on the corpus test split and on field-dev's test split
# (bundled model, scripts/int8_qualify.py; table and dates in docs/engines.md#int8-qualification-per-cpu).
# A family or network not listed is refused with a reason: INT8 kernels differ per instruction set (u8s8 sums
# saturate without VNNI), so accuracy measured on one family says nothing certain about another.
INT8_F1_TOLERANCE = 0.005
INT8_QUALIFIED: dict[str, frozenset[str]] = {
    # AMD EPYC, ONNX Runtime 1.32.0, 2026-12-03: audio +0.0000 / +0.0000, fusion +0.0000 / -0.0046 (corpus test /
    # field-dev test); the frame network lost 0.0069 on field-dev (+0.0000 on the corpus), so it is not offered.
    "avx2": frozenset({"audio", "fusion"}),
    # avx512_vnni, avx_vnni: not measured with the current quantization (reduced range) and bundle: refused.
}
CPU_FAMILIES = {
    "avx512_vnni": "x86-64 with AVX-512 VNNI",
    "avx_vnni": "x86-64 with AVX-VNNI (256-bit)",
    "avx2": "x86-64 with AVX2, without VNNI",
    "other": "a CPU without AVX2 (or not x86-64)",
}


def runtime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def default_threads() -> int:
    """Intra-op threads: the cores there are, at most 4 (our networks stop scaling beyond that)."""
    return max(1, min(4, os.cpu_count() or 1))


def session_options(threads: int | None = None, spin: bool = False):
    """CPU-tuned options: a fixed intra-op pool, full graph optimisation, sequential execution (our graphs are
    chains, so parallel execution only adds scheduling), and no spinning between calls by default: spinning
    workers burn a core while a real-time loop waits for the next window, taking it from decoding."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
    return options


_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _spec(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in node.shape)
    return TensorSpec(node.name, shape, _DTYPES.get(node.type, node.type))


class OnnxRuntimeEngine(EngineBase):
    """One ONNX graph in an ONNX Runtime CPU session."""

    backend = "onnxruntime"

    def __init__(self, path: Path, kind: str, threads: int | None = None, spin: bool = False, detail: str = "") -> None:
        import onnxruntime as ort

        self.kind, self.path = kind, Path(path)
        self.metadata: dict = {"path": str(path)}
        options = session_options(threads, spin)
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types: the file is unusable either way
            raise RuntimeError(f"ONNX Runtime cannot load {path}: {e}") from e
        self._inputs = tuple(_spec(n) for n in self._session.get_inputs())
        self._outputs = tuple(_spec(n) for n in self._session.get_outputs())
        self._names = [s.name for s in self._outputs]
        log_io(
            log,
            self.backend,
            kind,
            self._inputs,
            self._outputs,
            f"{options.intra_op_num_threads} threads" + (f", {detail}" if detail else ""),
        )

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.kind, self._inputs, inputs)
        feed = {s.name: np.ascontiguousarray(inputs[s.name], dtype=s.dtype) for s in self._inputs}
        return dict(zip(self._names, self._session.run(self._names, feed)))

    def close(self) -> None:
        self._session = None


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic INT8 quantization of the MatMul/Gemm weights of `source` into `target` (see the module docstring)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.name + ".prep.onnx")
    try:
        with _quiet_quantizer():
            # Shape inference and constant folding first, as ORT's quantization guide asks: it finds more to quantize.
            try:
                quant_pre_process(str(source), str(prepared))
            except TypeError:
                # ORT's symbolic shape inference fails on some exported graphs (the frame network's: a value
                # without a type); ONNX's own shape inference and the optimisation still run.
                log.debug("symbolic shape inference failed on %s; quantizing without it", source, exc_info=True)
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(
                str(prepared),
                str(target),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(INT8_OP_TYPES),
                reduce_range=INT8_REDUCE_RANGE,
            )
    finally:
        prepared.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ORT's quantizer logs a line per tensor at INFO on the root logger; keep the log readable."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.quantization.shape_inference")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def cpu_family(cpuinfo: str | None = None) -> str:
    """The CPU family INT8 kernels depend on, from /proc/cpuinfo's flags: a key of CPU_FAMILIES."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no flags to read, so nothing is known about the INT8 kernels
            return "other"
    flags = next((line.partition(":")[2].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    for family in ("avx512_vnni", "avx_vnni", "avx2"):
        if family in flags:
            return family
    return "other"


def int8_refusal(kind: str, family: str) -> str | None:
    """Why the INT8 engine of network `kind` is not offered on a CPU of `family`; None where it is qualified."""
    if kind in INT8_QUALIFIED.get(family, frozenset()):
        return None
    measured = family in INT8_QUALIFIED
    why = (
        f"it differs from FP32 by more than {INT8_F1_TOLERANCE} F1 there"
        if measured
        else "its accuracy was not measured on this CPU type"
    )
    return (
        f"INT8 is not offered for the {kind} network on this CPU ({CPU_FAMILIES[family]}): {why} "
        "(docs/engines.md#int8-qualification-per-cpu); use fp32"
    )


def check_precision(precision: str) -> str:
    """The precision an ONNX Runtime CPU engine is built in: fp16 falls back to fp32 with a warning."""
    if precision == "fp16":
        log.warning("FP16 is not supported by the ONNX Runtime CPU backend; using FP32 instead")
        return "fp32"
    if precision not in ("fp32", "int8"):
        raise EngineError(f"unknown precision {precision!r} for onnxruntime; choose fp32 or int8")
    return precision
