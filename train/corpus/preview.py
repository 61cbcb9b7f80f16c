"""Preview sheets of a built corpus: frames and log-mel spectrograms per class, decoded from the clips."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from streamrec.core.features import LOGMEL_PRESETS, logmel
from streamrec.core.media import decode_audio, decode_frames

FRAMES_PER_CLASS = 6  # columns of the contact sheet


def write_previews(out: Path, plans: list) -> tuple[Path, Path]:
    """Writes OUT/preview_frames.png and OUT/preview_logmel.png; returns their paths."""
    by_class: dict[str, list] = defaultdict(list)
    for plan in plans:
        by_class[plan.class_name].append(plan)
    classes = list(by_class)
    config = LOGMEL_PRESETS["realtime"]

    fig, axes = plt.subplots(
        len(classes), FRAMES_PER_CLASS, figsize=(FRAMES_PER_CLASS * 1.6, len(classes) * 1.3), squeeze=False
    )
    for row, name in enumerate(classes):
        frames = []
        for plan in (p for p in by_class[name] if p.has_video):
            decoded = decode_frames(out / plan.rel_path, fps=1.0)
            if decoded is not None:
                picks = np.linspace(0, len(decoded[0]) - 1, 3).astype(int)
                frames += [decoded[0][i] for i in picks]
            if len(frames) >= FRAMES_PER_CLASS:
                break
        for col in range(FRAMES_PER_CLASS):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(frames):
                ax.imshow(frames[col])
        axes[row][0].set_title(name, loc="left", fontsize=8)
    fig.tight_layout()
    frames_path = out / "preview_frames.png"
    fig.savefig(frames_path, dpi=90)
    plt.close(fig)

    cols = 4
    rows = int(np.ceil(len(classes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 2.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, name in enumerate(classes):
        plan = next((p for p in by_class[name] if p.has_audio), None)
        if plan is None:
            continue
        audio = decode_audio(out / plan.rel_path, config.sample_rate)
        spectrogram = logmel(audio[: config.sample_rate * 5], config)
        ax = axes.flat[k]
        ax.imshow(
            spectrogram,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(0, spectrogram.shape[1] * config.hop_length / config.sample_rate, 0, config.n_mels),
        )
        ax.set_title(f"{name} ({Path(plan.rel_path).name})", fontsize=8)
        ax.axis("on")
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("mel band", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    logmel_path = out / "preview_logmel.png"
    fig.savefig(logmel_path, dpi=90)
    plt.close(fig)
    return frames_path, logmel_path
