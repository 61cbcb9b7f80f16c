"""`streamrec train audio | video | fusion | all | tagger`: networks into a model bundle."""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from streamrec.cli.args import (
    _int_list,
    _positive_float,
    _positive_int,
    add_fit,
    add_val_data,
    add_weight_decay,
    add_workers,
    console,
    fit_options,
)
from streamrec.core.errors import UserError

# The real-time default audio network: Han et al.'s layout at a quarter of its widths, on 1 s windows
# of the real-time front end (docs/results.md gives the comparison behind this choice).
REALTIME_CHANNELS = (16, 32, 64, 128)
REALTIME_EMBEDDING = 256


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train audio, video and fusion networks into a model bundle",
        description="Train networks into a model bundle (a directory: manifest.json + weights).",
    )
    train_commands = train.add_subparsers(dest="train_command", metavar="SUBCOMMAND", required=True)
    _add_audio(train_commands)
    _add_video(train_commands)
    _add_frame_heads(train_commands)
    _add_fusion(train_commands)
    _add_all(train_commands)
    _add_tagger(train_commands)


def _add_distributed(p: argparse.ArgumentParser) -> None:
    """Options that matter under `torchrun --nproc-per-node N -m streamrec train ...` (README: several processes)."""
    p.add_argument(
        "--dist-backend",
        choices=("auto", "gloo", "nccl"),
        default="auto",
        help="under torchrun: how the processes exchange gradients; auto = NCCL with CUDA GPUs, else gloo (CPU)",
    )
    p.add_argument(
        "--dist-timeout",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="under torchrun: seconds to wait for every process to join before failing (default 60)",
    )


def _in_session(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The command, joined to its peers first when torchrun started several processes (a no-op otherwise)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from streamrec.train import distributed  # imported here: CLI start-up time

        with distributed.session(args.dist_backend, args.dist_timeout):
            if not distributed.is_main():  # rank 0 speaks for all: progress, summaries, info logs
                logging.getLogger("streamrec").setLevel(logging.WARNING)
            return command(args)

    return run


def _print_summary(kind: str, summary: dict, out: str | Path) -> None:
    from streamrec.train import distributed

    if not distributed.is_main():
        return
    test = summary["test"]
    console.print(
        f"[green]{kind}[/green]: test Hit@1 {test['hit1']:.3f}  Hit@3 {test['hit3']:.3f}  "
        f"F1 {test['f1_macro']:.3f} on {test['n']} clips; bundle {out}",
        highlight=False,
    )


def _add_augment(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--augment",
        metavar="LEVERS",
        help="waveform augmentation of the audio training windows: all (the default; none for a frozen "
        "representation, which is computed once), none, or a comma list of pitch (+-3 semitones), eq (random "
        "equaliser), room (synthetic reverb), dynamics (level, saturation), mix (speech and noise under the music)",
    )
    p.add_argument(
        "--background-share",
        type=float,
        default=0.2,
        metavar="F",
        help="share of each audio batch that is 'no instrument' windows: silence, speech, babble, noise (default 0.2)",
    )


def _augment_options(args: argparse.Namespace, frozen: bool = False) -> dict:
    """AudioTrainOptions' augmentation fields from --augment and --background-share, or a one-line error."""
    from streamrec.train.augment import parse_levers

    if not 0 <= args.background_share < 1:
        raise UserError(f"--background-share must be in [0, 1), got {args.background_share}")
    try:
        levers = parse_levers(args.augment or ("none" if frozen else "all"))
    except ValueError as e:
        raise UserError(f"--augment: {e}") from e
    return {"augment": levers, "background_share": args.background_share}


def _add_audio(train_commands: argparse._SubParsersAction) -> None:
    a = train_commands.add_parser(
        "audio",
        help="train an audio network (Han, Choi, Xception, attention) on log-mel spectrograms",
        description="Trains one of the seeds' audio networks with Adam, class-balanced sampling and early stopping "
        "on validation F1; evaluates the best epoch on the test split; writes BUNDLE/audio.pt, the "
        "manifest, training curves and a confusion matrix (BUNDLE/reports/).",
    )
    a.add_argument("--arch", choices=("han", "choi", "xception", "attention"), default="han", help="architecture")
    a.add_argument(
        "--crop",
        choices=("cc", "uc"),
        help="choi/xception: central 29.1 s crop (cc) or 10 uniform 3 s crops averaged (uc, default)",
    )
    a.add_argument("--frontend", choices=("han", "choi", "realtime"), help="log-mel preset (default: the arch's own)")
    a.add_argument("--window", type=_positive_float, metavar="S", help="input window in seconds (default: the arch's)")
    a.add_argument(
        "--channels",
        type=_int_list,
        metavar="LIST",
        help="conv widths per block, e.g. 16,32,64,128 (default: the seed's sizes)",
    )
    a.add_argument("--embedding-dim", type=_positive_int, metavar="N", help="size of the penultimate features")
    a.add_argument(
        "--representation",
        choices=("joint", "logmel", "embedding"),
        default="joint",
        help="attention (seed 003): what the head attends over: an embedding CNN trained with it (joint, "
        "default), the log-mel frames themselves, or a frozen embedding CNN (random or --embedding)",
    )
    a.add_argument(
        "--embedding",
        metavar="FILE",
        help="with --representation embedding: a checkpoint of `python -m streamrec.train.seed003 pretrain` "
        "(default: the embedding CNN stays randomly initialised)",
    )
    a.add_argument("--data", required=True, metavar="DIR", help="dataset directory (labels.csv + clips)")
    a.add_argument("--out", required=True, metavar="BUNDLE", help="model bundle directory to write (created)")
    a.add_argument("--epochs", type=_positive_int, default=60, help="maximum epochs (default 60)")
    a.add_argument(
        "--patience",
        type=_positive_int,
        default=10,
        help="early stopping: epochs without a better validation F1 (default 10, as the seed paper)",
    )
    a.add_argument("--max-minutes", type=_positive_float, help="stop after this much training time")
    a.add_argument("--batch-size", type=_positive_int, default=32)
    a.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    add_weight_decay(a)
    a.add_argument("--crops-per-clip", type=_positive_int, default=4, help="random windows per clip and epoch")
    a.add_argument("--specaugment", action="store_true", help="mask random mel bands and frames while training")
    _add_augment(a)
    a.add_argument(
        "--background",
        action="store_true",
        help="add a 'no instrument' output trained on generated "
        "silence, noise and speech (what the live runtime needs to stay quiet between pieces)",
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--resume", action="store_true", help="continue an interrupted run from BUNDLE/.train/")
    a.add_argument(
        "--init",
        metavar="BUNDLE",
        help="start from this bundle's audio network (same architecture, front end and classes) and fine-tune it",
    )
    add_workers(a)
    add_val_data(a)
    _add_distributed(a)
    a.set_defaults(func=cmd_train_audio)


@_in_session
def cmd_train_audio(args: argparse.Namespace) -> int:
    # imported here: CLI start-up time
    from streamrec.core.audio_setup import make_setup
    from streamrec.train.train_audio import AudioTrainOptions, train_audio

    try:
        setup = make_setup(args.arch, args.crop, args.frontend, args.window, background=args.background)
    except ValueError as e:
        raise UserError(str(e)) from e
    options = AudioTrainOptions(
        data=Path(args.data),
        out=Path(args.out),
        setup=setup,
        fit=fit_options(args),
        batch_size=args.batch_size,
        crops_per_clip=args.crops_per_clip,
        specaugment=args.specaugment,
        resume=args.resume,
        workers=args.workers,
        channels=args.channels,
        embedding_dim=args.embedding_dim,
        representation=args.representation,
        embedding=Path(args.embedding) if args.embedding else None,
        val_data=Path(args.val_data) if args.val_data else None,
        init=Path(args.init) if args.init else None,
        **_augment_options(args, frozen=args.representation != "joint"),
    )
    summary = train_audio(options)
    _print_summary(f"audio {summary['setup']}", summary, args.out)
    return 0


def _add_video(train_commands: argparse._SubParsersAction) -> None:
    v = train_commands.add_parser(
        "video",
        help="train the frame network (EfficientNet-Lite0 or Inception v3) on frames at 1 fps",
        description="Trains the frame network: frames at 1 fps resized to 256 and centre-cropped to 224, random "
        "horizontal flips, each frame labelled with its clip's label; a clip's prediction is the mean "
        "over its frames. The backbone is frozen (features cached) and the head trained; --tune-top trains the "
        "backbone's top convolution too.",
    )
    add_fit(v, epochs=60, patience=5)
    v.add_argument("--backbone", choices=("efficientnet_lite0", "inception_v3"), default="efficientnet_lite0")
    v.add_argument("--no-pretrained", action="store_true", help="random backbone instead of ImageNet weights")
    v.add_argument("--weights", metavar="FILE", help="local backbone weights file (Inception v3 state dict)")
    v.add_argument("-k", type=_positive_int, default=10, help="frames drawn per clip and epoch (default 10)")
    v.add_argument(
        "--imagenet-prior",
        action="store_true",
        help="add each class's own ImageNet classifier rows (frozen) to the trained head's logits "
        "(efficientnet_lite0 with ImageNet weights)",
    )
    v.add_argument(
        "--zero-shot",
        action="store_true",
        help="train nothing: the ImageNet prior alone, the baseline a trained head must beat",
    )
    v.add_argument(
        "--picture-styles",
        metavar="STYLE,...",
        default="",
        help="extra training views of each frame, redrawn in these styles: gray (high-contrast luminance, "
        "silhouette-like), poster (three flat levels per channel, icon-like); their trunk features are "
        "computed once and cached (default: none)",
    )
    v.add_argument(
        "--mixup",
        type=_positive_float,
        metavar="ALPHA",
        help="mix pairs of training frames' trunk features and their labels by Beta(ALPHA, ALPHA) weights, "
        "against memorising the corpus's few pictures per class (e.g. 0.4; default off)",
    )
    v.add_argument(
        "--train-on-val",
        action="store_true",
        help="with --val-data: train on the corpus's val split too. The corpus splits by picture, so its val "
        "clips add pictures the train split lacks (a class has 3 to 23), while the epoch is chosen on the "
        "other dataset's val split; the corpus test split stays held out",
    )
    v.add_argument(
        "--tune-top",
        action="store_true",
        help="fine-tune the trunk's top convolution (1x1, 320 -> 1280) with the head, on cached outputs of the "
        "blocks below it; the weight decay pulls it towards its ImageNet weights (efficientnet_lite0; the bundle's "
        "format and run-time cost stay as they are)",
    )
    add_val_data(v)
    _add_distributed(v)
    v.set_defaults(func=cmd_train_video)


@_in_session
def cmd_train_video(args: argparse.Namespace) -> int:
    from streamrec.train.train_video import VideoTrainOptions, train_video

    options = VideoTrainOptions(
        data=Path(args.data),
        out=Path(args.out),
        backbone=args.backbone,
        pretrained=not args.no_pretrained,
        k_frames=args.k,
        fit=fit_options(args),
        batch_size=args.batch_size,
        workers=args.workers,
        weights_file=Path(args.weights) if args.weights else None,
        imagenet_prior=args.imagenet_prior,
        zero_shot=args.zero_shot,
        val_data=Path(args.val_data) if args.val_data else None,
        picture_styles=_picture_styles(args.picture_styles),
        mixup=args.mixup or 0.0,
        train_splits=("train", "val") if args.train_on_val else ("train",),
        tune_top=args.tune_top,
    )
    _print_summary("video", train_video(options), args.out)
    return 0


def _picture_styles(text: str) -> tuple[str, ...]:
    """--picture-styles as a tuple, or a one-line error naming what is not a style."""
    from streamrec.core.errors import UserError
    from streamrec.train.frame_features import PICTURE_STYLES

    styles = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in styles if s not in PICTURE_STYLES]
    if unknown:
        raise UserError(f"--picture-styles: unknown {', '.join(unknown)}; choose from {', '.join(PICTURE_STYLES)}")
    return tuple(dict.fromkeys(styles))


def _add_frame_heads(train_commands: argparse._SubParsersAction) -> None:
    h = train_commands.add_parser(
        "frame-heads",
        help="one frame network from the heads of several bundles' frame networks (their mean probabilities)",
        description="Writes OUT's frame network: the frame heads of the BUNDLEs (trained by `streamrec train video` "
        "on the same backbone; for example on different picture pools or seeds), in order, on their shared trunk. Its "
        "probabilities are the mean of the heads': heads that learned from different pictures err on different "
        "ones, and their mean is less sure where they disagree. The trunk runs once, so a head costs little at run "
        "time. The first BUNDLE's head gives the embeddings the fusion network stacks. Reports Hit@1 and F1 on "
        "--data's test split and --val-data's val split; the bundle's other networks are left as they are.",
    )
    h.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundles whose frame heads are merged (two or more)")
    h.add_argument("--data", required=True, metavar="DIR", help="dataset whose test split is reported (the corpus)")
    h.add_argument("--out", required=True, metavar="BUNDLE", help="model bundle to write the frame network into")
    h.add_argument(
        "--val-data",
        metavar="DIR",
        help="dataset whose val split is reported (default: --data's): a set from sources training never saw, "
        "such as `streamrec data field-dev`'s",
    )
    add_workers(h)
    h.set_defaults(func=cmd_train_frame_heads)


def cmd_train_frame_heads(args: argparse.Namespace) -> int:
    from streamrec.train.frame_heads import merge_frame_heads

    summary = merge_frame_heads(
        [Path(b) for b in args.bundles],
        Path(args.out),
        Path(args.data),
        Path(args.val_data) if args.val_data else None,
        args.workers,
    )
    _print_summary("video", summary, args.out)
    return 0


def _add_fusion(train_commands: argparse._SubParsersAction) -> None:
    f = train_commands.add_parser(
        "fusion",
        help="train the late-fusion network over a bundle's audio and frame networks",
        description="Trains the late-fusion network of the seed paper over k frame features and one audio window; "
        "'frozen' keeps the extractors fixed, 'joint' trains them with the fusion network (seed 004).",
    )
    add_fit(f, epochs=60, patience=8)
    f.add_argument("--scheme", choices=("frozen", "joint"), default="frozen")
    f.add_argument("-k", type=_positive_int, default=5, help="frame slots of the fusion input (default 5)")
    add_val_data(f)
    _add_distributed(f)
    f.set_defaults(func=cmd_train_fusion)


@_in_session
def cmd_train_fusion(args: argparse.Namespace) -> int:
    from streamrec.train.train_fusion import FusionTrainOptions, train_fusion

    options = FusionTrainOptions(
        bundle=Path(args.out),
        data=Path(args.data),
        scheme=args.scheme,
        k_frames=args.k,
        fit=fit_options(args),
        batch_size=args.batch_size,
        workers=args.workers,
        val_data=Path(args.val_data) if args.val_data else None,
    )
    _print_summary("fusion", train_fusion(options), args.out)
    return 0


def _add_all(train_commands: argparse._SubParsersAction) -> None:
    t = train_commands.add_parser(
        "all",
        help="train audio, video and fusion in order: the default bundle's recipe",
        description="Trains the real-time audio network, the EfficientNet-Lite0 frame network and the late-fusion "
        "network into one bundle, with progress; this is how the bundled default model is made.",
    )
    add_fit(t, epochs=30, patience=10)
    t.add_argument(
        "--scheme",
        choices=("frozen", "joint"),
        default="joint",
        help="fusion training scheme (default joint: it keeps each modality alone within 2 F1 points)",
    )
    t.add_argument(
        "--no-imagenet-prior",
        action="store_true",
        help="frame head without ImageNet's own classifier rows for each class (the prior is on by default)",
    )
    _add_augment(t)
    add_val_data(t)
    _add_distributed(t)
    t.set_defaults(func=cmd_train_all)


@_in_session
def cmd_train_all(args: argparse.Namespace) -> int:
    """The default bundle's recipe: real-time audio network, EfficientNet-Lite0 frames, joint late fusion."""
    from streamrec.core.audio_setup import make_setup
    from streamrec.train.train_audio import AudioTrainOptions, train_audio
    from streamrec.train.train_fusion import FusionTrainOptions, train_fusion
    from streamrec.train.train_video import VideoTrainOptions, train_video

    data, out = Path(args.data), Path(args.out)
    val_data = Path(args.val_data) if args.val_data else None
    audio = AudioTrainOptions(
        data=data,
        out=out,
        setup=make_setup("han", frontend="realtime", background=True),
        fit=fit_options(args),
        channels=REALTIME_CHANNELS,
        embedding_dim=REALTIME_EMBEDDING,
        workers=args.workers,
        val_data=val_data,
        **_augment_options(args),
    )
    _print_summary("audio", train_audio(audio), out)
    video = VideoTrainOptions(
        data=data,
        out=out,
        k_frames=10,
        fit=fit_options(args, patience=5),
        workers=args.workers,
        imagenet_prior=not args.no_imagenet_prior,
        val_data=val_data,
    )
    _print_summary("video", train_video(video), out)
    fusion = FusionTrainOptions(
        bundle=out,
        data=data,
        scheme=args.scheme,
        fit=fit_options(args, patience=8),
        workers=args.workers,
        val_data=val_data,
    )
    _print_summary("fusion", train_fusion(fusion), out)
    return 0


def _add_tagger(train_commands: argparse._SubParsersAction) -> None:
    t = train_commands.add_parser(
        "tagger",
        help="add a pretrained music tagger (musicnn) with a probe to our classes to a bundle",
        description="Adds the tagger to a bundle that has its audio network: musicnn (Pons & Serra, trained on "
        "real recordings; its weights come from the installed `musicnn` wheel) embeds the audio network's windows "
        "of DATA's train clips, and a linear probe to the bundle's classes is fitted on them. The runtime mixes its "
        "answer into the audio, one update late, at the share `streamrec tune` then chooses on source-disjoint val "
        "clips (until then the tagger is not used).",
    )
    t.add_argument("--data", required=True, metavar="DIR", help="dataset directory (its train split fits the probe)")
    t.add_argument("--out", required=True, metavar="BUNDLE", help="model bundle with an audio network (written to)")
    t.add_argument(
        "--source",
        choices=("MTT_musicnn", "MSD_musicnn"),
        default="MTT_musicnn",
        help="musicnn checkpoint: MagnaTagATune (default) or the Million Song Dataset",
    )
    t.add_argument(
        "--weight-decay",
        type=_positive_float,
        default=1e-3,
        metavar="L2",
        help="L2 penalty on the probe's weights (default 1e-3, chosen on field-dev val)",
    )
    add_workers(t)
    t.set_defaults(func=cmd_train_tagger)


def cmd_train_tagger(args: argparse.Namespace) -> int:
    from streamrec.train.train_tagger import train_tagger

    metrics = train_tagger(Path(args.data), Path(args.out), args.source, args.weight_decay, args.workers)
    if "test" in metrics:
        _print_summary("tagger", metrics, args.out)
    console.print("next: `streamrec tune FIELD_DEV --model BUNDLE` chooses the tagger's share of the audio")
    return 0
