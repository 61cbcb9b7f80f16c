"""`streamrec engines build` and `streamrec engines triton`: ONNX export, inference engines and a Triton model
repository for a model bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamrec.cli.args import _int_list, _positive_int, add_model, console


def register(commands: argparse._SubParsersAction) -> None:
    en = commands.add_parser(
        "engines",
        help="export and compile inference engines for a model bundle",
        description="Export ONNX and build engines for a model bundle.",
    )
    en_commands = en.add_subparsers(dest="engines_command", metavar="SUBCOMMAND", required=True)
    _add_build(en_commands)
    _add_triton(en_commands)


def _add_build(en_commands: argparse._SubParsersAction) -> None:
    eb = en_commands.add_parser(
        "build",
        help="export ONNX and build ONNX Runtime or TensorRT engines, cached beside the bundle",
        description="Exports the bundle's audio, frame and fusion networks (and its tagger, where it has one) to "
        "ONNX and builds engines into "
        "BUNDLE/engines/, keyed by the weights' hash, precision and runtime/GPU, so a stale engine is "
        "never used. INT8 on ONNX Runtime quantizes matrix products dynamically; INT8 on TensorRT is "
        "calibrated on --calibration-data.",
    )
    add_model(eb)
    eb.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    eb.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    eb.add_argument("--max-batch", type=_positive_int, default=16, help="largest batch of the engines (default 16)")
    eb.add_argument("--calibration-data", metavar="DATASET", help="dataset whose clips calibrate INT8 (TensorRT)")
    eb.add_argument("--rebuild", action="store_true", help="rebuild even when a valid cached engine exists")
    eb.set_defaults(func=cmd_engines_build)


def cmd_engines_build(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    from streamrec.engines import EngineOptions, build_engines

    options = EngineOptions(
        max_batch=args.max_batch,
        rebuild=args.rebuild,
        calibration_data=Path(args.calibration_data) if args.calibration_data else None,
    )
    built = build_engines(
        Path(args.model) if args.model else None, args.backend, args.precision, progress=True, options=options
    )
    for engine in built:
        console.print(
            f"{engine.kind:>6}: {engine.backend} {engine.precision} -> {engine.path} ({engine.seconds:.1f} s)",
            highlight=False,
        )
    return 0


def _add_triton(en_commands: argparse._SubParsersAction) -> None:
    et = en_commands.add_parser(
        "triton",
        help="write a Triton Inference Server model repository for a model bundle",
        description="Writes OUT/streamrec_audio, streamrec_video and streamrec_fusion (and streamrec_tagger for a "
        "bundle with a tagger): each network as ONNX for "
        "Triton's onnxruntime backend or, where TensorRT and a GPU are present, as a TensorRT plan, with a "
        "config.pbtxt (inputs and outputs as the engines have them, max batch size, dynamic batching, instance "
        "group) and a version folder. The log-mel front ends stay on the client. Serve OUT with tritonserver "
        "--model-repository OUT and run with --backend triton --triton-url grpc://HOST:8001.",
    )
    et.add_argument("out", metavar="OUT", help="model repository directory (created; streamrec_* models replaced)")
    add_model(et)
    et.add_argument(
        "--format",
        default="auto",
        choices=("auto", "onnx", "tensorrt"),
        help="auto: TensorRT plans where TensorRT and a CUDA GPU are present, else ONNX (default auto)",
    )
    et.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"), help="of TensorRT plans")
    et.add_argument("--max-batch", type=_positive_int, default=16, help="max_batch_size of every model (default 16)")
    et.add_argument(
        "--preferred-batch",
        type=_int_list,
        metavar="LIST",
        help="dynamic batching's preferred batch sizes, comma-separated (default 4,8,MAX_BATCH)",
    )
    et.add_argument(
        "--queue-delay-us",
        type=int,
        default=1000,
        metavar="US",
        help="how long the dynamic batcher may hold a request to fill a batch, microseconds (default 1000)",
    )
    et.add_argument("--instances", type=_positive_int, default=1, help="model instances per device (default 1)")
    et.set_defaults(func=cmd_engines_triton)


def cmd_engines_triton(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    from streamrec.engines.triton_repo import RepositoryOptions, write_repository

    options = RepositoryOptions(
        format=args.format,
        precision=args.precision,
        max_batch=args.max_batch,
        preferred_batches=args.preferred_batch or (),
        queue_delay_us=args.queue_delay_us,
        instances=args.instances,
    )
    out = Path(args.out)
    for model in write_repository(Path(args.model) if args.model else None, out, options):
        files = ", ".join(str(p.relative_to(out)) for p in sorted(model.rglob("*")) if p.is_file())
        console.print(f"{model.name}: {files}", highlight=False)
    console.print(f"serve it with: tritonserver --model-repository {out.resolve()}", highlight=False)
    return 0
