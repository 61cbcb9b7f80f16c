"""`streamrec engines build`: ONNX export and inference engines for a model bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamrec.cli.args import _positive_int, add_model, console


def register(commands: argparse._SubParsersAction) -> None:
    en = commands.add_parser(
        "engines",
        help="export and compile inference engines for a model bundle",
        description="Export ONNX and build engines for a model bundle.",
    )
    en_commands = en.add_subparsers(dest="engines_command", metavar="SUBCOMMAND", required=True)
    _add_build(en_commands)


def _add_build(en_commands: argparse._SubParsersAction) -> None:
    eb = en_commands.add_parser(
        "build",
        help="export ONNX and build ONNX Runtime or TensorRT engines, cached beside the bundle",
        description="Exports the bundle's audio, frame and fusion networks to ONNX and builds engines into "
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
