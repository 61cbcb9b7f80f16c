"""The one training loop: Adam, early stopping on validation F1, best checkpoint, resume, progress, curves.

Audio, frame and fusion training differ only in how they make batches, compute the loss and
validate; they hand those in as callables.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamrec.train import distributed

# matplotlib is imported where a figure is drawn: slow to import, and only figures need it.

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitOptions:
    max_epochs: int = 60
    patience: int = 10  # epochs without a better validation F1 (seed paper: 10 for audio, 5 for video)
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_minutes: float | None = None  # stop after this much wall time, keeping the best epoch
    seed: int = 0


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    best_val_f1: float
    # per epoch: epoch, loss, val_f1, seconds (all of it), step_seconds (the training steps, without validation)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""  # why training ended


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    validate: Callable[[], float],
    options: FitOptions,
    state_path: Path | None = None,
    resume: bool = False,
    label: str = "training",
    parameters: Iterable[torch.nn.Parameter] | None = None,
) -> FitResult:
    """Trains until early stopping, max_epochs or max_minutes; returns the best epoch's weights.

    batches(epoch) yields (inputs, targets) for one epoch; validate() returns the validation macro F1
    (the model is put in eval mode around it). With state_path the full state is saved after every
    epoch, and resume=True continues from it.

    Under torchrun (train/distributed.py) every rank draws the same global batches, trains the
    DDP-wrapped model on its rows of each, and follows rank 0's validation; only rank 0 shows progress
    and saves the state. On a GPU (NCCL) the steps run on a copy of the model on this rank's GPU, and
    model, on the CPU, takes its weights before each validation.
    """
    seed_everything(options.seed)
    main, where = distributed.is_main(), distributed.device()
    trained = model if where.type == "cpu" else copy.deepcopy(model).to(where)
    chosen = list(parameters) if parameters is not None else list(model.parameters())
    if trained is not model:  # the copy's parameters of the same names
        names, own = {id(p): name for name, p in model.named_parameters()}, dict(trained.named_parameters())
        chosen = [own[names[id(p)]] for p in chosen]
    optimizer = torch.optim.Adam(
        chosen,
        lr=options.learning_rate,
        weight_decay=options.weight_decay,
    )
    result = FitResult(best_state=copy.deepcopy(model.state_dict()), best_epoch=0, best_val_f1=-math.inf)
    start_epoch, elapsed_before = 1, 0.0
    if resume and state_path is not None:  # rank 0 reads the state (its disk), every rank gets it
        saved = distributed.from_main(
            torch.load(state_path, map_location="cpu", weights_only=False) if main and state_path.exists() else None
        )
        if saved is not None:
            trained.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            result = FitResult(**saved["result"])
            start_epoch, elapsed_before = saved["epoch"] + 1, result.seconds
            per_rank = saved.get("torch_rng_ranks") or []
            same_world = len(per_rank) == distributed.world_size()
            torch.set_rng_state(per_rank[distributed.rank()] if same_world else saved["torch_rng"])
            log.info(
                "resuming %s at epoch %d (best val F1 %.3f at epoch %d)",
                label,
                start_epoch,
                result.best_val_f1,
                result.best_epoch,
            )
    network = distributed.wrap(trained)
    world = distributed.world_size()
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, disable=not main) as progress:
        task = progress.add_task(label, total=options.max_epochs, completed=start_epoch - 1, status="")
        for epoch in range(start_epoch, options.max_epochs + 1):
            epoch_start = time.monotonic()
            network.train()
            losses = []  # per global batch: this rank's share of its mean loss (the shares sum to it)
            for inputs, targets in batches(epoch):
                inputs, targets, weight = distributed.shard(inputs, targets)
                inputs, targets = distributed.to_device(inputs, where), targets.to(where)
                optimizer.zero_grad()
                loss = loss_fn(network(inputs), targets)
                (loss * weight).backward()
                optimizer.step()
                losses.append(loss.item() * weight / world)
                progress.update(
                    task, status=f"loss {np.mean(losses) * world:.3f}  best val F1 {max(result.best_val_f1, 0):.3f}"
                )
            epoch_loss = distributed.sum_over_ranks(float(np.sum(losses))) / len(losses) if losses else math.nan
            step_seconds = time.monotonic() - epoch_start
            distributed.sync_buffers(trained)
            if trained is not model:
                model.load_state_dict(trained.state_dict())
            model.eval()
            # Rank 0 validates and keeps time; every rank takes its figures, so all stop at the same epoch.
            if main:
                with distributed.host_threads():
                    val_f1 = float(validate())
            else:
                val_f1 = 0.0
            val_f1, step_seconds, epoch_seconds, result.seconds = distributed.from_main(
                (val_f1, step_seconds, time.monotonic() - epoch_start, elapsed_before + time.monotonic() - started)
            )
            seconds = {"seconds": epoch_seconds, "step_seconds": step_seconds}
            result.history.append({"epoch": epoch, "loss": epoch_loss, "val_f1": val_f1, **seconds})
            if val_f1 > result.best_val_f1:
                result.best_val_f1, result.best_epoch = val_f1, epoch
                result.best_state = copy.deepcopy(model.state_dict())
            progress.update(
                task,
                advance=1,
                status=f"loss {epoch_loss:.3f}  val F1 {val_f1:.3f}  best {result.best_val_f1:.3f}",
            )
            if state_path is not None:
                rng_states = distributed.gather(torch.get_rng_state())
                if main:
                    state_path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "epoch": epoch,
                            "result": asdict(result),
                            "torch_rng": rng_states[0],
                            "torch_rng_ranks": rng_states,  # each rank's dropout draws go on where they stopped
                        },
                        state_path,
                    )
            if epoch - result.best_epoch >= options.patience:
                result.stopped = f"early stopping: no better validation F1 for {options.patience} epochs"
                break
            if options.max_minutes is not None and result.seconds > options.max_minutes * 60:
                result.stopped = f"time budget of {options.max_minutes:g} min reached"
                break
        else:
            result.stopped = f"max epochs ({options.max_epochs}) reached"
    log.info(
        "%s: %s; best val F1 %.3f at epoch %d, %.1f min",
        label,
        result.stopped,
        result.best_val_f1,
        result.best_epoch,
        result.seconds / 60,
    )
    model.load_state_dict(result.best_state)
    model.eval()
    distributed.check_identical(model, label)
    return result


def plot_curves(history: list[dict], path: Path, title: str) -> Path:
    """Training loss and validation F1 per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax_loss = plt.subplots(figsize=(6, 3.5))
    ax_loss.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    ax_f1 = ax_loss.twinx()
    ax_f1.plot(epochs, [h["val_f1"] for h in history], color="tab:orange", marker=".", label="validation F1")
    ax_f1.set_ylabel("validation macro F1", color="tab:orange")
    ax_f1.set_ylim(0, 1)
    ax_loss.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
