"""What the command families share: the stderr console, argument types, and the arguments several commands take."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from rich.console import Console

from streamrec.core.errors import UserError

# Every command's messages, progress and (through main's log handler) log lines go here.
console = Console(stderr=True)

# argparse names a type function in its messages ("invalid _positive_int value: 'x'"): keep the names.


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:  # float() takes "nan" and "inf", no duration or rate can be either
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _address(text: str) -> tuple[str, int]:
    # imported here: CLI start-up time
    from streamrec.runtime.broadcast import parse_address

    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _origin(text: str) -> str:
    from streamrec.runtime.guard import normalize_origin  # imported here: CLI start-up time

    try:
        return normalize_origin(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled model)")


def add_workers(p: argparse.ArgumentParser, help: str = "decoding processes") -> None:
    p.add_argument("--workers", type=_positive_int, default=max(1, os.cpu_count() or 1), help=help)


def add_fit(p: argparse.ArgumentParser, epochs: int, patience: int) -> None:
    """The arguments of train video, fusion and all (train audio has its own)."""
    p.add_argument("--data", required=True, metavar="DIR", help="dataset directory (labels.csv + clips)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="model bundle directory")
    p.add_argument("--epochs", type=_positive_int, default=epochs, help=f"maximum epochs (default {epochs})")
    p.add_argument(
        "--patience",
        type=_positive_int,
        default=patience,
        help=f"early stopping patience in epochs (default {patience})",
    )
    p.add_argument("--max-minutes", type=_positive_float, help="stop after this much training time")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    add_weight_decay(p)
    p.add_argument("--seed", type=int, default=0)
    add_workers(p)


def add_weight_decay(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=0.0,
        metavar="L2",
        help="L2 penalty on the trained weights (Adam's weight_decay; default 0)",
    )


def add_val_data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--val-data",
        metavar="DIR",
        help="decide early stopping and the kept epoch on this dataset's val split instead of --data's: a set "
        "from sources training never saw (a field-dev set, `streamrec data field-dev`), so the choice rewards "
        "recognising instruments rather than the corpus",
    )


def fit_options(args: argparse.Namespace, patience: int | None = None):
    """The training loop's options from the train commands' arguments."""
    from streamrec.train.loop import FitOptions

    return FitOptions(
        max_epochs=args.epochs,
        patience=patience or args.patience,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        max_minutes=args.max_minutes,
        seed=args.seed,
    )


def add_runtime_model(p: argparse.ArgumentParser) -> None:
    """The model, backend and hop of run and live."""
    add_model(p)
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime", "tensorrt", "triton"),
        help="inference backend; auto = TensorRT with a CUDA GPU, else ONNX Runtime; triton = a Triton server "
        "at --triton-url (default auto)",
    )
    add_triton_url(p)
    p.add_argument(
        "--hop", type=_positive_float, default=0.5, metavar="S", help="seconds between audio windows (default 0.5)"
    )


def add_triton_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--triton-url",
        metavar="grpc://HOST:PORT",
        help="the Triton Inference Server of --backend triton, serving the model repository that "
        "`streamrec engines triton` wrote for this model (docs/engines.md#triton-inference-server)",
    )


def add_outputs(p: argparse.ArgumentParser, ws_default: str = "off") -> None:
    """The output options of run, live and demo; `output_options` reads them back."""
    p.add_argument(
        "--ws",
        type=_address,
        metavar="HOST:PORT",
        help=f"serve prediction events over websockets (default {ws_default}; binds 127.0.0.1 unless a host is given)",
    )
    p.add_argument(
        "--web",
        type=_address,
        metavar="[HOST:]PORT",
        help="serve the browser live view at http://HOST:PORT/ (binds 127.0.0.1 unless a host is "
        "given; port 0 = any free port, printed at start)",
    )
    p.add_argument(
        "--token",
        help="clients must send this token (?token=... or an Authorization: Bearer header); "
        "the web view takes it from its own URL",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        type=_origin,
        metavar="ORIGIN",
        help="let web pages from ORIGIN (https://host[:port], or * for any) connect to --ws and the web view's "
        "websocket; by default browsers' handshakes from other sites get 403, so that no page you visit can read "
        "the events (repeatable)",
    )
    p.add_argument(
        "--certfile",
        metavar="PEM",
        help="serve --ws and --web over TLS (wss://, https://) with this certificate chain (PEM)",
    )
    p.add_argument("--keyfile", metavar="PEM", help="the private key of --certfile, when it is not in that file")
    p.add_argument(
        "--explain",
        action="store_true",
        help="add Grad-CAM of the newest frame for the top class to each prediction (a 7x7 grid and "
        "a small overlay image, shown by the web view); runs the frame network's trunk again "
        "in torch once per frame",
    )
    p.add_argument("--jsonl", metavar="FILE", help="also write every event to FILE, one JSON object per line")
    p.add_argument(
        "--mqtt",
        metavar="URL",
        help="also publish every event to an MQTT broker, mqtt://[USER:PASS@]HOST[:PORT][/PREFIX], on topics "
        "PREFIX/STREAM/TYPE (QoS 1; default port 1883, prefix streamrec; docs/events.md)",
    )
    p.add_argument("--no-view", action="store_true", help="no terminal live view")
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")


def output_options(args: argparse.Namespace) -> dict:
    """The output options shared by run, live and demo."""
    if args.token and not (args.ws or args.web):
        raise UserError("--token needs --ws or --web: the token guards the websocket server")
    if (args.allow_origin or args.certfile or args.keyfile) and not (args.ws or args.web):
        raise UserError("--allow-origin, --certfile and --keyfile need --ws or --web: they apply to those")
    if args.keyfile and not args.certfile:
        raise UserError("--keyfile needs --certfile: the key belongs to a certificate")
    mqtt = None
    if args.mqtt:
        from streamrec.runtime.mqtt_sink import MqttOptions  # imported here: CLI start-up time

        try:
            mqtt = MqttOptions.from_url(args.mqtt)
        except ValueError as e:
            raise UserError(f"--mqtt: {e}") from None
    return {
        "ws": args.ws,
        "web": args.web,
        "token": args.token,
        "jsonl": Path(args.jsonl) if args.jsonl else None,
        "view": not args.no_view,
        "explain": args.explain,
        "allow_origins": tuple(args.allow_origin or ()),
        "certfile": Path(args.certfile) if args.certfile else None,
        "keyfile": Path(args.keyfile) if args.keyfile else None,
        "mqtt": mqtt,
    }
