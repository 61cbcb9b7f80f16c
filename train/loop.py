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
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, loss, val_f1, seconds
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
    """
    seed_everything(options.seed)
    optimizer = torch.optim.Adam(
        parameters if parameters is not None else model.parameters(),
        lr=options.learning_rate,
        weight_decay=options.weight_decay,
    )
    result = FitResult(best_state=copy.deepcopy(model.state_dict()), best_epoch=0, best_val_f1=-math.inf)
    start_epoch, elapsed_before = 1, 0.0
    if resume and state_path is not None and state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        result = FitResult(**saved["result"])
        start_epoch, elapsed_before = saved["epoch"] + 1, result.seconds
        torch.set_rng_state(saved["torch_rng"])
        log.info(
            "resuming %s at epoch %d (best val F1 %.3f at epoch %d)",
            label,
            start_epoch,
            result.best_val_f1,
            result.best_epoch,
        )
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(label, total=options.max_epochs, completed=start_epoch - 1, status="")
        for epoch in range(start_epoch, options.max_epochs + 1):
            epoch_start = time.monotonic()
            model.train()
            losses = []
            for inputs, targets in batches(epoch):
                optimizer.zero_grad()
                loss = loss_fn(model(inputs), targets)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                progress.update(
                    task, status=f"loss {np.mean(losses):.3f}  best val F1 {max(result.best_val_f1, 0):.3f}"
                )
            model.eval()
            val_f1 = float(validate())
            result.history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)),
                    "val_f1": val_f1,
                    "seconds": time.monotonic() - epoch_start,
                }
            )
            if val_f1 > result.best_val_f1:
                result.best_val_f1, result.best_epoch = val_f1, epoch
                result.best_state = copy.deepcopy(model.state_dict())
            result.seconds = elapsed_before + time.monotonic() - started
            progress.update(
                task,
                advance=1,
                status=f"loss {np.mean(losses):.3f}  val F1 {val_f1:.3f}  best {result.best_val_f1:.3f}",
            )
            if state_path is not None:
                state_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                        "result": asdict(result),
                        "torch_rng": torch.get_rng_state(),
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
