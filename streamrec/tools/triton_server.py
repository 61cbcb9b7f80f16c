"""A loopback Triton Inference Server for a streamrec model repository, through PyTriton: for tests and benchmarks.

`streamrec engines triton OUT` writes a repository for a full tritonserver (the onnxruntime or tensorrt backend).
PyTriton (PyPI nvidia-pytriton) bundles a real tritonserver but serves only Python callables (its Python backend),
so this script binds one callable per model of the repository, under the model's name, inputs, outputs, max batch
size and dynamic batching as its config.pbtxt states them (parsed with Triton's own protobuf definitions), and runs
the model's ONNX file with ONNX Runtime inside it. Clients see Triton's gRPC and HTTP protocols as from any server.

Run it with the Python of .venv-triton (scripts/install.sh makes it: PyTriton needs numpy<2):

    .venv-triton/bin/python streamrec/tools/triton_server.py OUT --grpc-port 8001

It prints "ready grpc://127.0.0.1:PORT" once every model is loaded and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

NUMPY_DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32}


def read_config(model_dir: Path):
    """The model's config.pbtxt as a Triton ModelConfig message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((model_dir / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def make_infer(onnx_path: Path, output_names: list[str], threads: int) -> Callable:
    """A batched PyTriton callable running one ONNX graph on ONNX Runtime's CPU provider."""
    import onnxruntime as ort
    from pytriton.decorators import batch

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(output_names, session.run(output_names, inputs)))

    return infer


def bind_repository(triton, repository: Path, threads: int) -> list[str]:
    """Binds every model directory with a config.pbtxt; returns the model names."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from tritonclient.grpc import model_config_pb2

    names = []
    for model_dir in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        config = read_config(model_dir)
        version = max(config.version_policy.specific.versions or [1])
        onnx_path = model_dir / str(version) / (config.default_model_filename or "model.onnx")
        if onnx_path.suffix != ".onnx":
            raise SystemExit(f"{config.name}: {onnx_path.name} is not ONNX; PyTriton here runs ONNX models only")
        dtype = lambda t: NUMPY_DTYPES[model_config_pb2.DataType.Name(t.data_type)]  # noqa: E731
        inputs = [Tensor(name=t.name, dtype=dtype(t), shape=tuple(t.dims)) for t in config.input]
        outputs = [Tensor(name=t.name, dtype=dtype(t), shape=tuple(t.dims)) for t in config.output]
        count = sum(g.count for g in config.instance_group) or 1
        batching = config.dynamic_batching
        triton.bind(
            model_name=config.name,
            model_version=version,
            infer_func=[make_infer(onnx_path, [t.name for t in config.output], threads) for _ in range(count)],
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(
                max_batch_size=config.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=batching.max_queue_delay_microseconds,
                    preferred_batch_size=list(batching.preferred_batch_size),
                ),
            ),
            strict=True,  # outputs must match the declared dtypes and shapes
        )
        names.append(config.name)
    if not names:
        raise SystemExit(f"no model (folder with a config.pbtxt) in {repository}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve a streamrec Triton model repository on 127.0.0.1 (PyTriton).")
    parser.add_argument("repository", type=Path)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per model instance")
    parser.add_argument(
        "--workspace", type=Path, help="PyTriton's working folder, not existing yet (default: a temporary one)"
    )
    args = parser.parse_args()

    # The Python backend's stub is linked against libpython: the server's children must find it.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)

    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        http_address="127.0.0.1",
        http_port=args.http_port,
        allow_metrics=False,
        exit_timeout_secs=1,  # a stopped test server need not wait for in-flight requests
    )
    # PyTriton creates the workspace itself (it must not exist yet) and removes it at a clean exit.
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="streamrec-triton-")) / "workspace"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Triton(config=config, workspace=workspace) as triton:
        names = bind_repository(triton, args.repository, args.threads)
        triton.run()
        print(f"ready grpc://127.0.0.1:{args.grpc_port} {' '.join(names)}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
