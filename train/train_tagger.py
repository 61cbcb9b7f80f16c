"""`streamrec train tagger`: a bundle's tagger (streamrec.core.models.tagger): musicnn's embedding of the audio
network's own windows, with a linear probe to the bundle's classes fitted on a corpus's train split.

musicnn's weights come from the installed `musicnn` wheel (streamrec.train.musicnn) and are not trained further:
they know timbre from real recordings, which a fit on our two soundfonts would wear away. The probe is a
multinomial logistic regression (L-BFGS) on the standardised embedding; its weight decay (1e-3) was chosen on
field-dev's val split by scripts/musicnn_probe.py. How much of the tagger the audio modality takes is the fusion
rule's `tagger_share`, which `streamrec tune` chooses on source-disjoint val clips: until then it is 0 and the
tagger is not used.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from streamrec.core.audio_setup import AudioSetup, crop_starts, take_windows
from streamrec.core.bundle import Bundle
from streamrec.core.errors import UserError
from streamrec.core.models.tagger import SAMPLE_RATE, MusicnnFrontend, Tagger, TaggerDims, TaggerSetup
from streamrec.train.audio_data import audio_clips
from streamrec.train.metrics import classification_report
from streamrec.train.musicnn import load_musicnn

log = logging.getLogger(__name__)

LICENSE_FILE = "tagger-LICENSE.md"  # musicnn's ISC notice, which must travel with every copy of its weights

WEIGHT_DECAY = 1e-3  # chosen on field-dev val among 1e-3, 1e-2, 1e-1 (docs/results.md, "musicnn's embedding")
PROBE_ITERATIONS = 200


@torch.no_grad()
def clip_embeddings(tagger: Tagger, frontend: MusicnnFrontend, audio: np.ndarray, setup: AudioSetup) -> torch.Tensor:
    """The tagger's standardised embeddings (windows, 1506) of one clip's evaluation windows (the audio network's)."""
    n = setup.frontend.window_samples
    windows = take_windows(audio, crop_starts(len(audio), n, setup), n)
    return tagger.embed(frontend(torch.from_numpy(windows)))


def fit_probe(x: torch.Tensor, y: torch.Tensor, probe: torch.nn.Linear, weight_decay: float) -> None:
    """Multinomial logistic regression of y on x into `probe`, by L-BFGS, with an L2 penalty on its weights."""
    torch.manual_seed(0)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=PROBE_ITERATIONS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x), y) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)


def train_tagger(
    data: Path, bundle_root: Path, source: str = "MTT_musicnn", weight_decay: float = WEIGHT_DECAY, workers: int = 2
) -> dict:
    """Fits the probe on `data`'s train split, writes BUNDLE/tagger.pt and its manifest entry, and returns the
    tagger's clip metrics on the test split (as the other networks' summaries)."""
    bundle = Bundle.load(bundle_root)
    if not bundle.has("audio"):
        raise UserError(f"bundle {bundle_root} has no audio network: train it first (the tagger takes its windows)")
    setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
    if setup.frontend.sample_rate != SAMPLE_RATE:
        raise UserError(f"the bundle's audio runs at {setup.frontend.sample_rate} Hz; the tagger needs {SAMPLE_RATE}")
    musicnn = load_musicnn(source)
    dims = TaggerDims(len(bundle.classes), musicnn.kernels, source)
    tagger = Tagger(dims)
    tagger.musicnn.load_state_dict(musicnn.state_dict())
    tagger.eval()
    frontend = MusicnnFrontend().eval()

    index = {name: i for i, name in enumerate(bundle.classes)}
    clips, _, _ = audio_clips(data, "train", SAMPLE_RATE, workers)
    if not clips:
        raise UserError(f"{data} has no train clips with audio")
    parts = [clip_embeddings(tagger, frontend, c.audio, setup) for c in track(clips, "musicnn on the train clips")]
    x = torch.cat(parts)
    y = torch.cat([torch.full((len(p),), index[c.record.label]) for p, c in zip(parts, clips)])
    # The embedding is standardised as the probe was fitted: a penalty means the same on every feature.
    tagger.mean.copy_(x.mean(0))
    tagger.std.copy_(x.std(0) + 1e-6)
    fit_probe((x - tagger.mean) / tagger.std, y, tagger.probe, weight_decay)

    test, _, _ = audio_clips(data, "test", SAMPLE_RATE, workers)
    metrics = {}
    if test:
        with torch.no_grad():
            scores = np.stack(
                [
                    torch.softmax(tagger.probe(clip_embeddings(tagger, frontend, c.audio, setup)), 1).mean(0).numpy()
                    for c in test
                ]
            )
        targets = np.array([index[c.record.label] for c in test])
        metrics["test"] = classification_report(scores, targets, bundle.classes)
    notice = importlib.metadata.distribution("musicnn").read_text("LICENSE.md")
    if not notice:
        raise UserError("the musicnn wheel's LICENSE.md is missing: its weights may not be copied without it")
    (bundle.root / LICENSE_FILE).write_text(notice, encoding="utf-8")
    bundle.save_network(
        "tagger",
        tagger,
        "musicnn_probe",
        dims.to_dict(),
        {"setup": TaggerSetup(setup.frontend.window_samples).to_dict(), "license": f"ISC ({LICENSE_FILE})"},
        metrics,
        {"data": str(data), "train_clips": len(clips), "windows": len(x), "weight_decay": weight_decay},
    )
    return metrics
