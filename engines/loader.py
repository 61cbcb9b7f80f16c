"""Choosing a backend, and loading a bundle's engines through the cache (building what is missing).

    engine = load_engine("path/to/bundle", "audio", backend="auto")
    out = engine.infer({"logmel": logmel})          # {"scores": (batch, classes), "embedding": (batch, dim)}

"auto" means TensorRT when it is importable and a CUDA GPU is visible, else ONNX Runtime, else torch;
the choice and its reason are logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from streamrec.core.bundle import KINDS, Bundle
from streamrec.core.graphs import graph_metadata, graph_spec
from streamrec.engines.base import BACKENDS, PRECISIONS, Engine, EngineError
from streamrec.engines.cache import CachedEngine, EngineCache, EngineKey
from streamrec.engines.export import EXPORT_FORMAT, OPSET, export_onnx, representative_inputs
from streamrec.engines.onnxruntime_engine import (
    INT8_OP_TYPES,
    INT8_REDUCE_RANGE,
    OnnxRuntimeEngine,
    check_precision,
    cpu_family,
    int8_refusal,
    quantize_int8,
    runtime_version,
)
from streamrec.engines.tensorrt_engine import (
    DEFAULT_MAX_BATCH,
    DEFAULT_OPT_BATCH,
    BuildOptions,
    TensorRTEngine,
    build_plan,
    calibration_batches,
    device_fingerprint,
    tensorrt_status,
)
from streamrec.engines.torch_engine import TorchEngine

# Backends' own packages (onnxruntime, tensorrt) are imported where they are used: each is optional.

log = logging.getLogger(__name__)

AUTO = "auto"
CALIBRATION_EXAMPLES = 128  # representative inputs per INT8 calibration (16 batches of 8)
CHECK_EXAMPLES = {"audio": 32, "video": 8, "fusion": 16, "tagger": 8}  # inputs a fresh build is compared with torch on

Stage = Callable[[str], None]


def onnxruntime_status() -> tuple[bool, str]:
    try:
        import onnxruntime
    except Exception as e:  # ImportError, or a broken wheel failing to load its shared library
        return False, f"ONNX Runtime is not installed ({type(e).__name__}: {e})"
    return True, f"ONNX Runtime {onnxruntime.__version__} on the CPU"


def choose_backend(requested: str = AUTO) -> str:
    """The backend to run on. "auto": TensorRT if usable, else ONNX Runtime, else torch. A named backend that
    is not usable here raises EngineError saying why."""
    if requested not in (AUTO, *BACKENDS):
        raise EngineError(f"unknown backend {requested!r}; choose {AUTO}, {', '.join(BACKENDS)}")
    if requested == "torch":
        log.info("backend torch: asked for")
        return "torch"
    trt_ok, trt_why = tensorrt_status() if requested in (AUTO, "tensorrt") else (False, "not asked for")
    if requested == "tensorrt":
        if not trt_ok:
            raise EngineError(f"backend tensorrt is not available here: {trt_why}")
        log.info("backend tensorrt: asked for; %s", trt_why)
        return "tensorrt"
    ort_ok, ort_why = onnxruntime_status()
    if requested == "onnxruntime":
        if not ort_ok:
            raise EngineError(f"backend onnxruntime is not available here: {ort_why}")
        log.info("backend onnxruntime: asked for; %s", ort_why)
        return "onnxruntime"
    if trt_ok:
        log.info("backend tensorrt (auto): %s", trt_why)
        return "tensorrt"
    if ort_ok:
        log.info("backend onnxruntime (auto): %s; TensorRT not used: %s", ort_why, trt_why)
        return "onnxruntime"
    log.info("backend torch (auto): %s; %s", trt_why, ort_why)
    return "torch"


@dataclass(frozen=True)
class EngineOptions:
    """How engines are built and run; everything that changes a built artifact is part of its cache key."""

    threads: int | None = (
        None  # ONNX Runtime intra-op threads (None: streamrec.engines.onnxruntime_engine.default_threads)
    )
    max_batch: int = DEFAULT_MAX_BATCH  # TensorRT profile: batch 1..max_batch
    opt_batch: int = DEFAULT_OPT_BATCH  # TensorRT profile: the batch kernels are tuned for
    calibration_data: Path | None = None  # INT8 calibration from this dataset's train split (else synthetic)
    calibration_examples: int = CALIBRATION_EXAMPLES
    device: str | None = None  # torch backend: "cpu" or "cuda" (None: cuda when available)
    rebuild: bool = False  # ignore what the cache holds
    cache_dir: Path | None = None  # the engine cache (None: BUNDLE/engines, see streamrec.engines.cache.cache_root)
    # ONNX Runtime INT8 where it is not qualified for this CPU (onnxruntime_engine.int8_refusal): only for
    # measuring a qualification (scripts/int8_qualify.py), never for serving.
    int8_unqualified: bool = False


def _bundle(bundle: Bundle | str | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)


def export_key(bundle: Bundle, kind: str) -> EngineKey:
    """The exported ONNX graph depends on the weights, our export code and the exporter (torch)."""
    return EngineKey(
        "onnx",
        kind,
        "fp32",
        {
            "weights_sha256": bundle.network(kind)["sha256"],
            "export_format": str(EXPORT_FORMAT),
            "opset": str(OPSET),
            "torch": torch.__version__,
        },
    )


def _ensure(
    cache: EngineCache, key: EngineKey, suffix: str, build: Callable[[Path], dict[str, Any]], rebuild: bool
) -> CachedEngine:
    """The cached artifact for key, built into a scratch file and stored when missing (or when asked)."""
    with cache.lock(key):
        if rebuild:
            cache.remove(key)
        found = cache.lookup(key, suffix)
        if found is not None:
            return found
        scratch = cache.scratch(key, suffix)
        try:
            metadata = build(scratch)
            return cache.store(key, scratch, suffix, metadata)
        finally:
            scratch.unlink(missing_ok=True)


def ensure_onnx(
    bundle: Bundle, kind: str, cache: EngineCache, rebuild: bool = False, stage: Stage = lambda s: None
) -> CachedEngine:
    def build(path: Path) -> dict[str, Any]:
        stage("exporting ONNX")
        return {**export_onnx(bundle, kind, path), "precision": "fp32"}

    return _ensure(cache, export_key(bundle, kind), ".onnx", build, rebuild)


def compare_with_torch(
    engine: Engine, bundle: Bundle, kind: str, count: int | None = None, batch: int = 8
) -> dict[str, float]:
    """How far a built engine is from the torch reference on representative inputs, fed `batch` at a time:
    the largest absolute difference of each output, and how often the top-1 class agrees."""
    inputs = representative_inputs(bundle, kind, count or CHECK_EXAMPLES[kind], seed=11)
    reference = TorchEngine(bundle, kind, device="cpu")
    try:
        expected = _infer_in_batches(reference, inputs, batch)
    finally:
        reference.close()
    got = _infer_in_batches(engine, inputs, batch)
    report = {f"max_abs_diff_{name}": float(np.abs(got[name] - value).max()) for name, value in expected.items()}
    first = engine.output_spec[0].name
    report["top1_agreement"] = float((got[first].argmax(1) == expected[first].argmax(1)).mean())
    return report


def _infer_in_batches(engine: Engine, inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    count = len(next(iter(inputs.values())))
    parts = [engine.infer({k: v[i : i + batch] for k, v in inputs.items()}) for i in range(0, count, batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _metadata(bundle: Bundle, kind: str, cached: CachedEngine, **extra: Any) -> dict[str, Any]:
    """An engine's metadata: its sidecar's record, with what the manifest says about the graph read afresh
    (the sidecar is the record of a build; the manifest is the truth about the network)."""
    return {**cached.metadata, **graph_metadata(bundle, kind), "path": str(cached.path), **extra}


def _load_or_rebuild(
    cache: EngineCache,
    key: EngineKey,
    ensure: Callable[[bool], CachedEngine],
    open_engine: Callable[[CachedEngine], Engine],
    rebuild: bool,
) -> Engine:
    """Opens the cached artifact; one that passes its hash check yet fails to load is removed and rebuilt once."""
    cached = ensure(rebuild)
    try:
        return open_engine(cached)
    except RuntimeError as e:
        log.warning("cached engine %s cannot be loaded (%s); rebuilding it", cached.path, e)
        cache.remove(key)
        return open_engine(ensure(True))


def _onnxruntime(
    bundle: Bundle, kind: str, precision: str, options: EngineOptions, cache: EngineCache, stage: Stage
) -> Engine:
    precision = check_precision(precision)
    refusal = int8_refusal(kind, cpu_family()) if precision == "int8" else None
    if refusal is not None:
        if not options.int8_unqualified:
            raise EngineError(refusal)
        log.warning("%s; built anyway for measurement (int8_unqualified)", refusal)

    def open_engine(cached: CachedEngine) -> Engine:
        stage("loading")
        engine = OnnxRuntimeEngine(cached.path, kind, options.threads, detail=f"{precision}, {cached.path.name}")
        engine.metadata = _metadata(bundle, kind, cached, precision=precision)
        return engine

    if precision == "fp32":  # the exported graph itself
        key = export_key(bundle, kind)
        return _load_or_rebuild(
            cache, key, lambda again: ensure_onnx(bundle, kind, cache, again, stage), open_engine, options.rebuild
        )

    key = EngineKey(
        "onnxruntime",
        kind,
        precision,
        {
            **export_key(bundle, kind).fields,
            "onnxruntime": runtime_version(),
            "int8_ops": ",".join(INT8_OP_TYPES),
            "int8_reduce_range": INT8_REDUCE_RANGE,
        },
    )

    def ensure(again: bool) -> CachedEngine:
        source = ensure_onnx(bundle, kind, cache, options.rebuild, stage)

        def build(path: Path) -> dict[str, Any]:
            stage("quantizing to INT8")
            quantize_int8(source.path, path)
            stage("checking against torch")
            check = OnnxRuntimeEngine(path, kind, options.threads, detail="check")
            try:
                report = compare_with_torch(check, bundle, kind)
            finally:
                check.close()
            log.info("%s INT8 vs torch: %s", kind, _format_report(report))
            return {**source.metadata, "precision": "int8", "quantization": "dynamic", "check": report}

        return _ensure(cache, key, ".onnx", build, again)

    return _load_or_rebuild(cache, key, ensure, open_engine, options.rebuild)


def _tensorrt(
    bundle: Bundle, kind: str, precision: str, options: EngineOptions, cache: EngineCache, stage: Stage
) -> Engine:
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    fingerprint = device_fingerprint()
    fields = {
        **export_key(bundle, kind).fields,
        **fingerprint,
        "max_batch": str(options.max_batch),
        "opt_batch": str(options.opt_batch),
    }
    if precision == "int8":
        data = options.calibration_data
        fields["calibration"] = f"{data.resolve() if data else 'synthetic'}:{options.calibration_examples}"
    key = EngineKey("tensorrt", kind, precision, fields)
    device_key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    timing_cache = cache.root / "tensorrt" / f"timing-{device_key}.cache"

    def open_engine(cached: CachedEngine) -> Engine:
        stage("loading")
        return TensorRTEngine(cached.path, kind, _metadata(bundle, kind, cached))

    def ensure(again: bool) -> CachedEngine:
        source = ensure_onnx(bundle, kind, cache, options.rebuild, stage)

        def build(path: Path) -> dict[str, Any]:
            spec = graph_spec(bundle, kind)
            batches = None
            if precision == "int8":
                stage("preparing calibration batches")
                batches = calibration_batches(
                    representative_inputs(
                        bundle, kind, options.calibration_examples, seed=5, data=options.calibration_data
                    )
                )
            stage(f"building TensorRT {precision} engine")
            built = build_plan(
                source.path,
                path,
                spec.inputs,
                spec.nominal,
                BuildOptions(precision, options.max_batch, options.opt_batch),
                batches,
                timing_cache,
                cache.path(key, ".calib"),
            )
            stage("checking against torch")
            check = TensorRTEngine(path, kind, {"precision": precision})
            try:
                report = compare_with_torch(check, bundle, kind, batch=min(8, options.max_batch))
            finally:
                check.close()
            log.info("%s TensorRT %s vs torch: %s", kind, precision, _format_report(report))
            return {**source.metadata, **built, "weights_sha256": fields["weights_sha256"], "check": report}

        return _ensure(cache, key, ".plan", build, again)

    return _load_or_rebuild(cache, key, ensure, open_engine, options.rebuild)


def _format_report(report: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in report.items())


def _load(
    bundle: Bundle, kind: str, backend: str, precision: str, options: EngineOptions, stage: Stage = lambda s: None
) -> Engine:
    if kind not in KINDS:
        raise EngineError(f"unknown network kind {kind!r}; choose {', '.join(KINDS)}")
    bundle.network(kind)  # BundleError (a UserError) when the bundle lacks it
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if backend == "torch":
        if precision != "fp32":
            log.warning("the torch backend runs FP32 only; using FP32 instead of %s", precision.upper())
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return TorchEngine(bundle, kind, device)
    cache = EngineCache(options.cache_dir) if options.cache_dir else EngineCache.for_bundle(bundle)
    if backend == "onnxruntime":
        return _onnxruntime(bundle, kind, precision, options, cache, stage)
    return _tensorrt(bundle, kind, precision, options, cache, stage)


def load_engine(
    bundle: Bundle | str | Path,
    kind: str,
    backend: str = AUTO,
    precision: str = "fp32",
    options: EngineOptions | None = None,
) -> Engine:
    """The engine of one network of a bundle (kind "audio", "video" or "fusion"), built into the bundle's
    engine cache first when missing, stale or damaged. streamrec.core.graphs gives each kind's inputs and outputs."""
    loaded = _bundle(bundle)
    return _load(loaded, kind, choose_backend(backend), precision, options or EngineOptions())


@dataclass(frozen=True)
class BuiltEngine:
    """One engine `build_engines` made sure of: where it is and how long that took (seconds; near 0 when cached)."""

    kind: str
    backend: str
    precision: str
    path: Path | None
    seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)


def build_engines(
    bundle: Bundle | str | Path,
    backend: str = AUTO,
    precision: str = "fp32",
    progress: bool = True,
    kinds: Sequence[str] | None = None,
    options: EngineOptions | None = None,
) -> list[BuiltEngine]:
    """Exports and builds the engines of every network in the bundle (or of `kinds`) for one backend and
    precision into the bundle's engine cache, with a progress display; cached engines are checked and reused."""
    loaded = _bundle(bundle)
    chosen = choose_backend(backend)
    if chosen == "torch":
        raise EngineError(
            "the torch backend runs the bundle as it is and has no engines to build; choose onnxruntime or tensorrt"
        )
    wanted = [k for k in KINDS if loaded.has(k)] if kinds is None else list(kinds)
    if not wanted:
        raise EngineError(f"bundle {loaded.root} has no networks to build engines for")
    options = options or EngineOptions()
    built = []
    with _progress(progress, len(wanted)) as (describe, advance):
        for kind in wanted:
            start = time.perf_counter()
            engine = _load(
                loaded, kind, chosen, precision, options, lambda stage, kind=kind: describe(f"{kind}: {stage}")
            )
            seconds = time.perf_counter() - start
            path = engine.metadata.get("path")
            built.append(
                BuiltEngine(
                    kind,
                    chosen,
                    engine.metadata.get("precision", precision),
                    Path(path) if path else None,
                    seconds,
                    dict(engine.metadata),
                )
            )
            engine.close()
            advance()
    return built


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[tuple[Callable[[str], None], Callable[[], None]]]:
    if not enabled:
        yield (lambda text: None), (lambda: None)
        return

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("engines", total=total)
        yield (lambda text: bar.update(task, description=text)), (lambda: bar.advance(task))
