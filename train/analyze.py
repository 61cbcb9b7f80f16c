"""`streamrec analyze`: what the fusion network's audio and visual features mean (seed 004).

For every clip of the split that has both modalities (the seed analyses videos with both):

- Feature importance. Seed 004 defines, for the features X of the layer under the decision rule
  y_c and the importance a_i^c = dy_c/dx_i (= w_i^c when one dense layer follows),
  L^c_i = (1/N_c) sum over the N_c examples d with F(d) = c of max(a_i^c x_i, 0).
  Our fusion network stacks the audio and frame embeddings, then two hidden layers, then the
  classifier, so the embeddings are not under a single linear layer. We keep the seed's own
  general definition a_i^c = dy_c/dx_i: gradient x input of the fused logit y_c (pre-softmax, as
  the seed's decision rule) with respect to the audio embedding and the frame embeddings, through
  the real fusion network (eval mode). A linear probe over [audio, mean frame] would explain a
  different model from the one that predicts; the gradient explains this one, and equals w_i^c x_i
  exactly where the head is linear. A clip's audio attribution is the mean over its evaluation
  windows (each window is one fusion input, as in `fused_probabilities`); its visual attribution sums
  the k frame slots (x_i's contributions through every slot) averaged over the windows; the feature
  value x_i is the mean window embedding and the mean of the k slot embeddings. The literal formula
  on the actual last layer (w^c times the body's 1024 hidden units) is reported too, but those units
  mix both modalities. N_c groups clips by the fused prediction F(d) = c, as the seed writes.
- Spearman correlations, per class, of its top audio and top visual features over that class's
  examples (seed 004's Figure 2), summarised as mean |rho| per block (audio-audio, visual-visual,
  audio-visual) beside a baseline: the audio-visual block after shuffling which clip's visual
  features go with which clip's audio features, i.e. what |rho| looks like with no relation at all
  at this number of examples.
- A t-SNE of the audio, visual and last-layer embeddings coloured by class (seed 000's poster).
- Grad-CAM overlays of test frames (streamrec.core.gradcam).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamrec.core.bundle import Bundle
from streamrec.core.dataset import DecodeSpec, load_dataset
from streamrec.core.errors import UserError
from streamrec.core.features import FrameConfig
from streamrec.core.models import load_network
from streamrec.core.models.fusion import LateFusion
from streamrec.core.scores import slot_indices, spread_indices
from streamrec.train import analysis_figures as figures
from streamrec.train.analysis_types import AnalyzeOptions, BundleAnalysis, ClassCorrelation, FusionFeatures
from streamrec.train.train_fusion import ClipInputs, Extractors, clip_inputs

# scipy.stats is imported where used: slow to import, only the correlation study needs it.

MIN_EXAMPLES_FOR_CORRELATION = 3  # a rank correlation over fewer examples is only ever +-1


# --- the numbers -------------------------------------------------------------------------------


def linear_contributions(weights: np.ndarray, features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """w_i^c x_i of each example for its own class c = groups[d]: weights (classes, dims), features (n, dims)."""
    return weights[groups] * features


def class_importance(contributions: np.ndarray, groups: np.ndarray, n_classes: int) -> np.ndarray:
    """Seed 004's L^c_i: (classes, dims) mean of max(contribution, 0) over the examples of each group c.

    contributions[d, i] is a_i^c x_i for c = groups[d]; a class with no example gets a row of NaN.
    """
    importance = np.full((n_classes, contributions.shape[1]), np.nan)
    positive = np.maximum(contributions, 0.0)
    for c in range(n_classes):
        members = groups == c
        if members.any():
            importance[c] = positive[members].mean(axis=0)
    return importance


def top_features(importance_row: np.ndarray, k: int) -> list[int]:
    """Indices of the k most important features, most important first (ties: lower index first)."""
    if np.isnan(importance_row).all():
        return []
    return [int(i) for i in np.argsort(-importance_row, kind="stable")[:k]]


def spearman_matrix(values: np.ndarray) -> np.ndarray:
    """(m, m) Spearman rank correlations of the columns of values (n, m); average ranks for ties, NaN
    for a column that does not vary (or when n < MIN_EXAMPLES_FOR_CORRELATION)."""
    from scipy.stats import rankdata

    m = values.shape[1]
    if len(values) < MIN_EXAMPLES_FOR_CORRELATION:
        return np.full((m, m), np.nan)
    ranks = rankdata(values, axis=0)
    centred = ranks - ranks.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    varies = norms > 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (centred.T @ centred) / np.outer(norms, norms)
    rho[~varies, :] = np.nan
    rho[:, ~varies] = np.nan
    return np.clip(rho, -1.0, 1.0)


def _mean_abs(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.mean()) if finite.size else math.nan


def block_means(rho: np.ndarray, n_audio: int) -> dict[str, float]:
    """Mean |rho| within the audio block, within the visual block (diagonals left out) and between them."""
    audio_block, visual_block = rho[:n_audio, :n_audio], rho[n_audio:, n_audio:]
    off_diagonal = lambda block: block[~np.eye(len(block), dtype=bool)]  # noqa: E731
    return {
        "audio_audio": _mean_abs(off_diagonal(audio_block)),
        "visual_visual": _mean_abs(off_diagonal(visual_block)),
        "audio_visual": _mean_abs(rho[:n_audio, n_audio:]),
    }


def beyond_chance(rho: np.ndarray, n_audio: int, n: int, level: float = 0.01) -> dict[str, float]:
    """Share of the pairs of each block whose |rho| passes the two-sided test of no correlation at `level`
    (t approximation with n - 2 degrees of freedom): independent features give `level`."""
    from scipy.stats import t

    keys = ("audio_audio", "visual_visual", "audio_visual")
    if n < MIN_EXAMPLES_FOR_CORRELATION + 1:
        return {f"{key}_beyond_p01": math.nan for key in keys}
    quantile = t.ppf(1 - level / 2, n - 2)
    critical = quantile / math.sqrt(n - 2 + quantile**2)
    off_diagonal = lambda block: block[~np.eye(len(block), dtype=bool)]  # noqa: E731
    blocks = (off_diagonal(rho[:n_audio, :n_audio]), off_diagonal(rho[n_audio:, n_audio:]), rho[:n_audio, n_audio:])
    shares = {}
    for key, block in zip(keys, blocks):
        finite = block[np.isfinite(block)]
        shares[f"{key}_beyond_p01"] = float(np.mean(np.abs(finite) > critical)) if finite.size else math.nan
    return shares


def shuffled_audio_visual(audio: np.ndarray, visual: np.ndarray, shuffles: int, rng: np.random.Generator) -> float:
    """Mean |rho| of the audio-visual block when each clip's visual features are paired with another
    clip's audio: the level of inter-modal |rho| that chance alone gives at this number of examples."""
    if len(audio) < MIN_EXAMPLES_FOR_CORRELATION or shuffles < 1:
        return math.nan
    n_audio = audio.shape[1]
    levels = []
    for _ in range(shuffles):
        rho = spearman_matrix(np.concatenate([audio, visual[rng.permutation(len(visual))]], axis=1))
        levels.append(_mean_abs(rho[:n_audio, n_audio:]))
    return float(np.nanmean(levels)) if not np.isnan(levels).all() else math.nan


def correlation_study(
    features: FusionFeatures, n_classes: int, top_audio: int, top_visual: int, shuffles: int, seed: int
) -> list[ClassCorrelation]:
    """Per class (grouped by F(d)): top features by L^c and their Spearman matrix over the class's clips."""
    rng = np.random.default_rng(seed)
    audio_importance = class_importance(features.audio_contribution, features.predicted, n_classes)
    visual_importance = class_importance(features.visual_contribution, features.predicted, n_classes)
    studies = []
    for c in range(n_classes):
        members = features.predicted == c
        audio_top = top_features(audio_importance[c], top_audio)
        visual_top = top_features(visual_importance[c], top_visual)
        audio_values = features.audio[members][:, audio_top]
        visual_values = features.visual[members][:, visual_top]
        rho = spearman_matrix(np.concatenate([audio_values, visual_values], axis=1))
        blocks = block_means(rho, len(audio_top))
        blocks["audio_visual_shuffled"] = shuffled_audio_visual(audio_values, visual_values, shuffles, rng)
        blocks.update(beyond_chance(rho, len(audio_top), int(members.sum())))
        studies.append(
            ClassCorrelation(
                c,
                int(members.sum()),
                audio_top,
                [float(audio_importance[c, i]) for i in audio_top],
                visual_top,
                [float(visual_importance[c, i]) for i in visual_top],
                rho,
                blocks,
            )
        )
    return studies


def summarise_blocks(studies: list[ClassCorrelation]) -> dict[str, float | int]:
    """Block means averaged over the classes that have a correlation matrix, and in how many classes
    each intra-modal block exceeds the inter-modal one."""
    usable = [s for s in studies if np.isfinite(s.blocks["audio_visual"])]
    summary: dict[str, float | int] = {"classes": len(usable)}
    keys = ("audio_audio", "visual_visual", "audio_visual", "audio_visual_shuffled")
    for key in keys + tuple(f"{k}_beyond_p01" for k in keys[:3]):
        values = [s.blocks[key] for s in usable if np.isfinite(s.blocks[key])]
        summary[key] = float(np.mean(values)) if values else math.nan
    summary["classes_audio_audio_above_audio_visual"] = sum(
        s.blocks["audio_audio"] > s.blocks["audio_visual"] for s in usable
    )
    summary["classes_visual_visual_above_audio_visual"] = sum(
        s.blocks["visual_visual"] > s.blocks["audio_visual"] for s in usable
    )
    return summary


# --- the fusion network's view of each clip ------------------------------------------------------


def frame_slot_embeddings(extractors: Extractors, trunk: np.ndarray, k: int) -> torch.Tensor:
    """(k, video_dim): k frames evenly spread over the clip, embedded, as `fused_probabilities` feeds them."""
    embeddings = extractors.embed_frames(torch.from_numpy(trunk[spread_indices(len(trunk), k), 0]))  # 0: unflipped
    return embeddings[slot_indices(len(embeddings), k)]


def fusion_features(
    fusion: LateFusion, extractors: Extractors, items: list[ClipInputs], paths: list[str], progress: bool = True
) -> FusionFeatures:
    """Embeddings, fused predictions and gradient x input attributions of clips that have both modalities."""
    fusion.eval()
    extractors.eval()
    hidden_inputs: list[torch.Tensor] = []
    hook = fusion.classifier.register_forward_hook(lambda _m, inputs, _out: hidden_inputs.append(inputs[0]))
    rows: dict[str, list] = {key: [] for key in FusionFeatures.__dataclass_fields__}
    columns = (TextColumn("[bold]attributions"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("clips", total=len(items))
            for item, path in zip(items, paths):
                bar.advance(task)
                with torch.no_grad():
                    audio = extractors.embed_audio(torch.from_numpy(item.windows))
                    slots = frame_slot_embeddings(extractors, item.trunk, fusion.dims.k_frames)
                audio.requires_grad_(True)
                slots.requires_grad_(True)
                n = len(audio)
                hidden_inputs.clear()
                logits = fusion(audio, slots.unsqueeze(0).expand(n, -1, -1), torch.ones(n, 2))
                hidden = hidden_inputs[0].detach()
                probabilities = torch.softmax(logits.detach(), dim=1).mean(dim=0)
                c = int(probabilities.argmax())
                # Windows are independent rows, so one backward of the summed logit gives each window's
                # own gradient for its audio row, and the slots' gradient summed over the windows.
                audio_gradient, slot_gradient = torch.autograd.grad(logits[:, c].sum(), (audio, slots))
                rows["paths"].append(path)
                rows["labels"].append(item.label)
                rows["predicted"].append(c)
                rows["probabilities"].append(probabilities.numpy())
                rows["audio"].append(audio.detach().mean(dim=0).numpy())
                rows["visual"].append(slots.detach().mean(dim=0).numpy())
                rows["hidden"].append(hidden.mean(dim=0).numpy())
                rows["audio_contribution"].append((audio_gradient * audio.detach()).mean(dim=0).numpy())
                rows["visual_contribution"].append((slot_gradient * slots.detach()).sum(dim=0).numpy() / n)
                weights = fusion.classifier.weight[c].detach()
                rows["hidden_contribution"].append((weights * hidden).mean(dim=0).numpy())
    finally:
        hook.remove()
    if not rows["paths"]:
        raise UserError("no clip of the split has both audio and video: nothing to analyse")
    paths, labels, predicted = rows.pop("paths"), rows.pop("labels"), rows.pop("predicted")
    return FusionFeatures(
        paths, np.array(labels, np.int64), np.array(predicted, np.int64), **{k: np.stack(v) for k, v in rows.items()}
    )


# --- one bundle ----------------------------------------------------------------------------------


def load_bundle(path: Path | None) -> Bundle:
    bundle = Bundle.load(path)
    missing = [kind for kind in ("audio", "video", "fusion") if not bundle.has(kind)]
    if missing:
        raise UserError(f"bundle {bundle.root} has no {', '.join(missing)} network; analyze needs all three")
    return bundle


def analyse_bundle(bundle: Bundle, options: AnalyzeOptions, name: str) -> BundleAnalysis:
    extractors = Extractors(bundle)
    fusion = load_network(bundle, "fusion")
    video = bundle.network("video")
    spec = DecodeSpec(
        sample_rate=extractors.setup.frontend.sample_rate,
        frames=FrameConfig(**video["frames"]) if "frames" in video else FrameConfig(),
    )
    loaded = load_dataset(options.data, split=options.split, spec=spec, classes=bundle.classes, workers=options.workers)
    both = [c for c in loaded.clips if c.audio is not None and c.frames is not None]
    if not both:
        raise UserError(f"{options.data} has no {options.split} clip with both audio and video")
    items = clip_inputs(both, extractors, bundle.classes)
    features = fusion_features(fusion, extractors, items, [c.record.rel_path for c in both])
    studies = correlation_study(
        features, len(bundle.classes), options.top_audio, options.top_visual, options.shuffles, options.seed
    )
    scheme = str(bundle.network("fusion").get("scheme", "unknown"))
    return BundleAnalysis(name, bundle.root, scheme, features, studies, extractors, loaded.clips)


def bundle_summary(analysis: BundleAnalysis, classes: tuple[str, ...], top_audio: int, top_visual: int) -> dict:
    """The JSON block of one bundle: per-class importance, correlation blocks and matrices, and a summary."""
    features = analysis.features
    n_classes = len(classes)
    hidden_importance = class_importance(features.hidden_contribution, features.predicted, n_classes)
    audio_importance = class_importance(features.audio_contribution, features.predicted, n_classes)
    visual_importance = class_importance(features.visual_contribution, features.predicted, n_classes)
    per_class = {}
    for study in analysis.studies:
        c = study.class_index
        audio_total, visual_total = np.nansum(audio_importance[c]), np.nansum(visual_importance[c])
        per_class[classes[c]] = {
            "n": study.n,
            "n_true_label_differs": int(np.sum((features.predicted == c) & (features.labels != c))),
            "top_audio": [
                {"feature": i, "importance": v} for i, v in zip(study.audio_features, study.audio_importance)
            ],
            "top_visual": [
                {"feature": i, "importance": v} for i, v in zip(study.visual_features, study.visual_importance)
            ],
            "top_last_layer_units": [
                {"unit": i, "importance": float(hidden_importance[c, i])}
                for i in top_features(hidden_importance[c], 10)
            ],
            # share of the class's positive evidence (summed L^c) that the audio embedding carries
            "audio_share": float(audio_total / (audio_total + visual_total))
            if audio_total + visual_total > 0
            else None,
            "correlation_blocks": study.blocks,
            "spearman": np.round(study.rho, 3).tolist(),
        }
    accuracy = float(np.mean(features.predicted == features.labels))
    return {
        "bundle": str(analysis.root),
        "scheme": analysis.scheme,
        "clips": len(features.paths),
        "fused_hit1_on_these_clips": accuracy,
        "feature_order": f"top {top_audio} audio then top {top_visual} visual, by importance",
        "summary": summarise_blocks(analysis.studies),
        "classes": per_class,
    }


def _json_ready(value):
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _json_ready(float(value))
    return value


def _unique_names(roots: list[Path], schemes: list[str]) -> list[str]:
    names = []
    for root, scheme in zip(roots, schemes):
        name = f"{root.resolve().name} ({scheme})"
        names.append(name if name not in names else f"{name} #{len(names) + 1}")
    return names


def analyze(options: AnalyzeOptions) -> dict:
    """Runs the study on the model bundle (and on each --compare bundle), writes OUT/index.html, the
    figures and OUT/analysis.json; returns the JSON's content."""

    if options.top_audio < 1 or options.top_visual < 1:
        raise UserError("--top-audio and --top-visual must be at least 1")
    bundles = [load_bundle(options.model)] + [load_bundle(p) for p in options.compare]  # fail before any work
    classes = bundles[0].classes
    for other in bundles[1:]:
        if other.classes != classes:
            raise UserError(f"bundle {other.root} has other classes than {bundles[0].root}; compare needs the same")
    names = _unique_names(
        [b.root for b in bundles], [str(b.network("fusion").get("scheme", "unknown")) for b in bundles]
    )
    options.out.mkdir(parents=True, exist_ok=True)
    analyses = [analyse_bundle(b, options, name) for b, name in zip(bundles, names)]
    main = analyses[0]
    result = {
        "classes": list(classes),
        "dataset": str(options.data),
        "split": options.split,
        "definition": {
            "importance": "L^c_i = mean over clips with fused prediction c of max(a_i^c x_i, 0), a_i^c = d logit_c "
            "/ d x_i through the fusion network (seed 004's a = dy/dx); x = audio embedding (mean over windows) "
            "and frame embeddings (k slots, summed)",
            "correlation": "Spearman over the class's clips of its top audio and top visual features",
            "audio_visual_shuffled": f"mean |rho| of the audio-visual block with the clips' pairing shuffled "
            f"({options.shuffles} times): the chance level",
        },
        "options": {
            **asdict(options),
            "data": str(options.data),
            "out": str(options.out),
            "model": str(main.root),
            "compare": [str(p) for p in options.compare],
        },
        "bundles": [bundle_summary(a, classes, options.top_audio, options.top_visual) for a in analyses],
    }
    result["figures"] = figures.write_figures(result, analyses, options)
    (options.out / "analysis.json").write_text(
        json.dumps(_json_ready(result), separators=(",", ":")) + "\n", encoding="utf-8"
    )
    figures.write_html(result, analyses, options.out)
    return result
