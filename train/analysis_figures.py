"""Figures and the HTML page of `streamrec analyze` (the numbers are computed in train/analyze.py)."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from streamrec.core.features import frames_to_tensor
from streamrec.core.gradcam import gradcam_maps, upsample_map
from streamrec.train.analysis_types import AnalyzeOptions, BundleAnalysis

# matplotlib and scikit-learn are imported where used: slow to import, only this report needs them.

EXAMPLE_CLASS = "saxophone"  # seed 004's Figure 2 shows SaxophonePerformance
BLOCK_LABELS = {
    "audio_audio": "audio-audio",
    "visual_visual": "visual-visual",
    "audio_visual": "audio-visual",
    "audio_visual_shuffled": "audio-visual, pairing shuffled",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    """A file-name-safe form: "model (joint)" -> "model-joint"."""
    return "-".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def plot_correlation_grid(analysis: BundleAnalysis, classes: tuple[str, ...], path: Path) -> Path:
    """Every class's Spearman matrix (audio features first, then visual; lines mark the modality boundary)."""
    plt = _pyplot()
    columns = 5
    rows = math.ceil(len(classes) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False, layout="constrained")
    image = None
    for ax in axes.flat:
        ax.axis("off")
    for ax, study in zip(axes.flat, analysis.studies):
        n_audio = len(study.audio_features)
        image = ax.imshow(np.nan_to_num(study.rho, nan=0.0), cmap="RdBu_r", vmin=-1, vmax=1)
        if study.rho.size:
            ax.axhline(n_audio - 0.5, color="black", linewidth=0.8)
            ax.axvline(n_audio - 0.5, color="black", linewidth=0.8)
        blocks = study.blocks
        ax.set_title(
            f"{classes[study.class_index]} (n={study.n})\n"
            f"AA {blocks['audio_audio']:.2f} VV {blocks['visual_visual']:.2f} AV {blocks['audio_visual']:.2f}",
            fontsize=7,
        )
    fig.suptitle(f"{analysis.name}: Spearman rho of each class's top audio features, then top visual", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="Spearman rho")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_example_correlation(analysis: BundleAnalysis, classes: tuple[str, ...], class_name: str, path: Path) -> Path:
    """Seed 004's Figure 2 for one class: the matrix with feature indices on the axes."""
    plt = _pyplot()
    study = analysis.studies[classes.index(class_name)]
    labels = [f"a{i}" for i in study.audio_features] + [f"v{i}" for i in study.visual_features]
    fig, ax = plt.subplots(figsize=(7.2, 6.2))
    image = ax.imshow(np.nan_to_num(study.rho, nan=0.0), cmap="RdBu_r", vmin=-1, vmax=1)
    n_audio = len(study.audio_features)
    ax.axhline(n_audio - 0.5, color="black", linewidth=1)
    ax.axvline(n_audio - 0.5, color="black", linewidth=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_title(f"{class_name}, {analysis.name}: top audio (a) and visual (v) features, n={study.n}", fontsize=9)
    fig.colorbar(image, ax=ax, label="Spearman rho")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_blocks(analyses: list[BundleAnalysis], classes: tuple[str, ...], path: Path) -> Path:
    """Mean |rho| per block and class, one panel per bundle."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(analyses), 1, figsize=(10, 2.8 * len(analyses)), squeeze=False)
    width = 0.2
    x = np.arange(len(classes))
    for ax, analysis in zip(axes[:, 0], analyses):
        for j, (key, label) in enumerate(BLOCK_LABELS.items()):
            values = [s.blocks[key] for s in analysis.studies]
            ax.bar(x + (j - 1.5) * width, np.nan_to_num(values), width, label=label)
        ax.set_xticks(x, classes, rotation=30, fontsize=7)
        ax.set_ylabel("mean |rho|")
        ax.set_ylim(0, 1)
        ax.set_title(analysis.name, fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_audio_share(bundles: list[dict], names: list[str], classes: tuple[str, ...], path: Path) -> Path:
    """Per class, the share of the positive evidence (summed L^c) carried by the audio embedding."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    width = 0.8 / len(bundles)
    x = np.arange(len(classes))
    for j, (entry, name) in enumerate(zip(bundles, names)):
        shares = [entry["classes"][c]["audio_share"] for c in classes]
        ax.bar(x + (j - (len(bundles) - 1) / 2) * width, [s if s is not None else 0 for s in shares], width, label=name)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, classes, rotation=30, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("audio share of evidence")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def tsne_points(values: np.ndarray, seed: int) -> np.ndarray | None:
    """(n, 2) t-SNE of the rows (sklearn, PCA start), or None for fewer than 2 rows."""
    from sklearn.manifold import TSNE

    if len(values) < 2:
        return None
    perplexity = min(30.0, max(1.0, (len(values) - 1) / 3))  # sklearn needs perplexity < n
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(values.astype(np.float64))


def plot_tsne(analysis: BundleAnalysis, classes: tuple[str, ...], path: Path, seed: int) -> Path:
    plt = _pyplot()
    features = analysis.features
    panels = {
        "audio embedding": features.audio,
        "visual embedding (mean of k frames)": features.visual,
        "fusion last-layer input": features.hidden,
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.0), squeeze=False)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[: len(classes)]
    for ax, (title, values) in zip(axes[0], panels.items()):
        points = tsne_points(values, seed)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if points is None:
            ax.text(0.5, 0.5, "too few clips", ha="center", transform=ax.transAxes)
            continue
        for c, name in enumerate(classes):
            members = features.labels == c
            if members.any():
                ax.scatter(points[members, 0], points[members, 1], s=8, color=colours[c], label=name)
    axes[0, -1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"t-SNE of {len(features.paths)} {analysis.name} clips, coloured by true class", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def overlay(frame: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The frame (H, W, 3) uint8 with the map drawn over it in a colour scale (red = most evidence)."""
    plt = _pyplot()
    heat = plt.get_cmap("jet")(upsample_map(cam, *frame.shape[:2]))[..., :3]
    return ((1 - alpha) * frame + alpha * 255 * heat).clip(0, 255).astype(np.uint8)


def write_gradcam(analysis: BundleAnalysis, classes: tuple[str, ...], out: Path, per_class: int) -> list[dict]:
    """Grad-CAM overlays of the middle frame of the first clips of each class, for the true class."""
    directory = out / "gradcam"
    directory.mkdir(parents=True, exist_ok=True)
    network = analysis.extractors.video
    written = []
    columns = (TextColumn("[bold]Grad-CAM"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("classes", total=len(classes))
        for c, name in enumerate(classes):
            chosen = [clip for clip in analysis.clips if clip.record.label == name and clip.frames is not None]
            chosen = chosen[:per_class]
            bar.advance(task)
            if not chosen:
                continue
            frames = np.stack([clip.frames[len(clip.frames) // 2] for clip in chosen])
            with torch.no_grad():
                images = frames_to_tensor(frames)
            cams, probabilities = gradcam_maps(network, images, [c] * len(chosen))
            for i, (clip, frame, cam) in enumerate(zip(chosen, frames, cams)):
                path = directory / f"{_slug(name)}_{i}.png"
                Image.fromarray(overlay(frame, cam)).save(path, optimize=True)
                written.append(
                    {
                        "class": name,
                        "clip": clip.record.rel_path,
                        "file": str(path.relative_to(out)),
                        "frame_probability": float(probabilities[i, c]),
                        "frame_prediction": classes[int(probabilities[i].argmax())],
                    }
                )
    return written


def write_figures(result: dict, analyses: list[BundleAnalysis], options: AnalyzeOptions) -> dict:
    """All figures into options.out, from the analyses and their JSON blocks (result["bundles"]); returns
    their paths relative to options.out, for the JSON and the page."""
    out = options.out
    classes = tuple(result["classes"])
    main = analyses[0]
    written: dict = {"names": [a.name for a in analyses], "correlations": []}
    for i, analysis in enumerate(analyses):
        path = plot_correlation_grid(analysis, classes, out / f"correlations_{i}_{_slug(analysis.name)}.png")
        written["correlations"].append(path.name)
    example = EXAMPLE_CLASS if EXAMPLE_CLASS in classes else classes[0]
    written["example_class"] = example
    written["example_correlation"] = plot_example_correlation(
        main, classes, example, out / f"correlation_{_slug(example)}.png"
    ).name
    written["blocks"] = plot_blocks(analyses, classes, out / "blocks.png").name
    written["audio_share"] = plot_audio_share(
        result["bundles"], written["names"], classes, out / "audio_share.png"
    ).name
    written["tsne"] = plot_tsne(main, classes, out / "tsne.png", options.seed).name
    written["gradcam"] = write_gradcam(main, classes, out, options.frames_per_class)
    return written


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def write_html(result: dict, analyses: list[BundleAnalysis], out: Path) -> Path:
    """OUT/index.html: the figures with short captions, and the tables behind them."""
    figures = result["figures"]
    classes = result["classes"]
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>streamrec analyze</title>",
        "<style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;line-height:1.4}"
        "img{max-width:100%}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
        "figcaption{font-size:14px;color:#333;margin-bottom:1.5em}.cams img{width:150px;margin:2px}"
        ".cams figure{display:inline-block;margin:4px;text-align:center;font-size:12px}</style></head><body>",
        "<h1>Representation analysis (seed 004)</h1>",
        f"<p>Dataset {esc(result['dataset'])}, split {esc(result['split'])}; clips with both audio and video. "
        "Feature importance follows seed 004: L<sup>c</sup><sub>i</sub> is the mean over the clips predicted as "
        "c of max(a<sup>c</sup><sub>i</sub> x<sub>i</sub>, 0), with a = d logit<sub>c</sub> / d x through the "
        "fusion network (gradient &times; input), x the audio embedding and the frame embeddings the fusion "
        "network stacks. Numbers: <a href='analysis.json'>analysis.json</a>.</p>",
        "<h2>Bundles</h2><table><tr><th>bundle</th><th>fusion scheme</th><th>clips</th><th>fused Hit@1</th>"
        "<th>mean |rho| audio-audio</th><th>visual-visual</th><th>audio-visual</th>"
        "<th>audio-visual, shuffled</th><th>classes AA &gt; AV</th><th>classes VV &gt; AV</th>"
        "<th>pairs with p &lt; 0.01: AA / VV / AV</th></tr>",
    ]
    for name, entry in zip(result["figures"]["names"], result["bundles"]):
        s = entry["summary"]
        parts.append(
            f"<tr><td style='text-align:left'>{esc(name)}<br><small>{esc(entry['bundle'])}</small></td>"
            f"<td>{esc(entry['scheme'])}</td><td>{entry['clips']}</td>"
            f"<td>{_number(entry['fused_hit1_on_these_clips'], 3)}</td><td>{_number(s['audio_audio'])}</td>"
            f"<td>{_number(s['visual_visual'])}</td><td>{_number(s['audio_visual'])}</td>"
            f"<td>{_number(s['audio_visual_shuffled'])}</td>"
            f"<td>{s['classes_audio_audio_above_audio_visual']}/{s['classes']}</td>"
            f"<td>{s['classes_visual_visual_above_audio_visual']}/{s['classes']}</td>"
            f"<td>{_number(s['audio_audio_beyond_p01'])} / {_number(s['visual_visual_beyond_p01'])} / "
            f"{_number(s['audio_visual_beyond_p01'], 3)}</td></tr>"
        )
    parts.append(
        "</table><p>Mean |rho| per block averaged over the classes; the shuffled column is the chance level of "
        "the audio-visual block. The last column is the share of feature pairs whose correlation passes a test "
        "of independence at p &lt; 0.01 (independent features: 0.01).</p>"
    )
    parts.append(
        f"<h2>Cross-correlations</h2><figure><img src='{esc(figures['example_correlation'])}'>"
        f"<figcaption>Seed 004's Figure 2 for {esc(figures['example_class'])} ({esc(figures['names'][0])}): "
        "Spearman correlations of the top audio features (a<i>index</i>) and top visual features "
        "(v<i>index</i>) over the class's clips. The seed found strong intra-modal and no significant "
        "inter-modal correlation.</figcaption></figure>"
    )
    for name, image in zip(figures["names"], figures["correlations"]):
        parts.append(
            f"<figure><img src='{esc(image)}'><figcaption>{esc(name)}: every class's matrix; AA, VV, AV are the "
            "mean |rho| of the audio-audio, visual-visual and audio-visual blocks.</figcaption></figure>"
        )
    parts.append(
        f"<figure><img src='{esc(figures['blocks'])}'><figcaption>Mean |rho| per block and class. The shuffled "
        "bar pairs each clip's visual features with another clip's audio: the inter-modal level that chance "
        "gives at this number of clips.</figcaption></figure>"
    )
    parts.append(
        f"<h2>Feature importance</h2><figure><img src='{esc(figures['audio_share'])}'><figcaption>Share of each "
        "class's positive evidence (L<sup>c</sup> summed over features) that the audio embedding carries; the rest "
        "comes from the frames.</figcaption></figure>"
    )
    main = result["bundles"][0]
    parts.append(
        f"<table><tr><th>class ({esc(figures['names'][0])})</th><th>n</th><th>top audio features</th>"
        "<th>top visual features</th></tr>"
    )
    for name in classes:
        entry = main["classes"][name]
        audio = ", ".join(str(f["feature"]) for f in entry["top_audio"])
        visual = ", ".join(str(f["feature"]) for f in entry["top_visual"])
        parts.append(
            f"<tr><td style='text-align:left'>{esc(name)}</td><td>{entry['n']}</td>"
            f"<td style='text-align:left'>{audio}</td><td style='text-align:left'>{visual}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        f"<h2>Embeddings</h2><figure><img src='{esc(figures['tsne'])}'><figcaption>t-SNE of the audio embedding, "
        "the mean frame embedding and the fusion network's last-layer input of each clip, coloured by true "
        "class.</figcaption></figure>"
    )
    parts.append("<h2>Grad-CAM on the frame network</h2><div class='cams'>")
    for cam in figures["gradcam"]:
        parts.append(
            f"<figure><img src='{esc(cam['file'])}'><br>{esc(cam['class'])}: p={cam['frame_probability']:.2f}"
            f"<br><small>frame says {esc(cam['frame_prediction'])}</small></figure>"
        )
    parts.append(
        "</div><p>Grad-CAM (red = most evidence) of the middle frame of each class's first test clips, for the true "
        "class, on the last convolution of the frame network (7 &times; 7 for EfficientNet-Lite0).</p>"
    )
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
