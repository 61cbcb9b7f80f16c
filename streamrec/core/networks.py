"""What a bundle's networks are to everything that runs them: `NetworkInfo` (what they expect, read from
the manifest alone), the `Networks` protocol (numpy in, numpy out) and its torch implementation.
streamrec.engines implements the same protocol on ONNX Runtime and TensorRT and chooses between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from streamrec.core.audio_setup import AudioSetup
from streamrec.core.bundle import Bundle, BundleError
from streamrec.core.features import FrameConfig, LogMel, frames_to_tensor, writable_array
from streamrec.core.models import load_network
from streamrec.core.models.audio import outputs_probabilities
from streamrec.core.models.tagger import MusicnnFrontend, TaggerSetup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkInfo:
    """What the runtime needs to know about a bundle's networks to feed them."""

    classes: tuple[str, ...]
    has_audio: bool
    has_video: bool
    has_fusion: bool
    sample_rate: int = 16000  # Hz of the audio windows
    window_samples: int = 16000  # samples per audio window
    background: bool = False  # the audio outputs end with a "no instrument" column
    frames: FrameConfig = FrameConfig()  # frame rate and preprocessing
    k_frames: int = 5  # frame slots of the fusion network
    audio_dim: int = 0  # audio embedding size
    video_dim: int = 0  # frame embedding size
    has_tagger: bool = False  # a tagger (core.models.tagger) whose answer the fusion rule mixes into the audio

    def __post_init__(self) -> None:
        if not (self.has_audio or self.has_video):
            raise ValueError("a model for the runtime needs an audio or a video network")
        if self.k_frames <= 0:
            raise ValueError(f"k_frames must be positive, got {self.k_frames}")

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> NetworkInfo:
        """Read from the manifest alone, so an engine backend gets the same description."""
        audio = video = fusion = None
        if bundle.has("audio"):
            audio = bundle.network("audio")
        if bundle.has("video"):
            video = bundle.network("video")
        if bundle.has("fusion"):
            fusion = bundle.network("fusion")
        setup = AudioSetup.from_dict(audio["setup"]) if audio else None
        if bundle.has("tagger") and not audio:
            raise BundleError(f"bundle {bundle.root} has a tagger but no audio network to mix it with")
        if bundle.has("tagger") and TaggerSetup.from_dict(bundle.network("tagger")["setup"]).window_samples != (
            setup.frontend.window_samples if setup else 0
        ):
            raise BundleError(f"the tagger of bundle {bundle.root} takes other windows than its audio network")
        return cls(
            classes=bundle.classes,
            has_audio=audio is not None,
            has_video=video is not None,
            has_fusion=fusion is not None,
            sample_rate=setup.frontend.sample_rate if setup else 16000,
            window_samples=setup.frontend.window_samples if setup else 16000,
            background=setup.background if setup else False,
            frames=FrameConfig(**video["frames"]) if video and "frames" in video else FrameConfig(),
            k_frames=fusion["dims"]["k_frames"] if fusion else 5,
            audio_dim=audio["dims"]["embedding_dim"] if audio else 0,
            video_dim=video["dims"]["embedding_dim"] if video else 0,
            has_tagger=bundle.has("tagger"),
        )


class Networks(Protocol):
    """A bundle's networks behind numpy arrays; `info` says what they expect."""

    info: NetworkInfo

    def audio(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, window_samples) float32 -> probabilities (n, outputs) with a last background column when
        info.background, and embeddings (n, audio_dim)."""
        ...

    def frames(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, size, size, 3) uint8 RGB -> probabilities (n, classes), embeddings (n, video_dim)."""
        ...

    # audio() is frontend() then audio_features(); the two halves are timed apart by the benchmark.
    def frontend(self, windows: np.ndarray) -> np.ndarray:
        """(n, window_samples) float32 -> log-mel (n, n_mels, frames) float32."""
        ...

    def audio_features(self, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log-mel (n, n_mels, frames) -> what audio() returns."""
        ...

    def fuse(self, audio: np.ndarray, frames: np.ndarray, present: np.ndarray) -> np.ndarray:
        """(n, audio_dim), (n, k, video_dim), (n, 2) presence mask -> probabilities (n, classes)."""
        ...

    def tagger(self, windows: np.ndarray) -> np.ndarray:
        """(n, window_samples) float32 -> the tagger's probabilities (n, classes) (info.has_tagger)."""
        ...


class TorchNetworks:
    """The bundle's torch modules on the CPU: the audio network with its log-mel front end, the
    frame network (trunk + head), the fusion network and the tagger with its own front end, as
    streamrec.train.train_fusion.Extractors uses them."""

    def __init__(self, bundle: Bundle) -> None:
        self.info = NetworkInfo.from_bundle(bundle)
        self._audio = load_network(bundle, "audio") if self.info.has_audio else None
        self._video = load_network(bundle, "video") if self.info.has_video else None
        self._fusion = load_network(bundle, "fusion") if self.info.has_fusion else None
        self._tagger = load_network(bundle, "tagger") if self.info.has_tagger else None
        self._tagger_frontend = MusicnnFrontend().eval()
        self._logmel = None
        self._audio_probabilities = False
        if self._audio is not None:
            setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
            self._logmel = LogMel(setup.frontend).eval()
            self._audio_probabilities = outputs_probabilities(self._audio.dims)
        modules = (self._audio, self._video, self._fusion, self._tagger)
        log.info(
            "torch networks from %s: audio %s, video %s, fusion %s, tagger %s",
            bundle.root,
            *(type(m).__name__ if m is not None else "none" for m in modules),
        )

    def audio(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.audio_features(self.frontend(windows))

    def frontend(self, windows: np.ndarray) -> np.ndarray:
        if self._logmel is None:
            raise RuntimeError("this bundle has no audio network")
        with torch.inference_mode():
            return self._logmel(torch.from_numpy(writable_array(windows, np.float32))).numpy()

    def audio_features(self, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._audio is None:
            raise RuntimeError("this bundle has no audio network")
        with torch.inference_mode():
            features = torch.from_numpy(writable_array(logmel, np.float32))
            embeddings = self._audio.embed(features)
            if self._audio_probabilities:  # the attention model gives probabilities itself
                probabilities = self._audio(features)
            else:
                probabilities = torch.softmax(self._audio.classifier(embeddings), dim=1)
        return probabilities.numpy(), embeddings.numpy()

    def frames(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._video is None:
            raise RuntimeError("this bundle has no video network")
        with torch.inference_mode():
            trunk = self._video.trunk(frames_to_tensor(writable_array(images, np.uint8)))
            embeddings = self._video.head.project(trunk)
            probabilities = torch.softmax(self._video.head.logits(trunk, embeddings), dim=1)
        return probabilities.numpy(), embeddings.numpy()

    def fuse(self, audio: np.ndarray, frames: np.ndarray, present: np.ndarray) -> np.ndarray:
        if self._fusion is None:
            raise RuntimeError("this bundle has no fusion network")
        with torch.inference_mode():
            logits = self._fusion(*(torch.from_numpy(writable_array(x, np.float32)) for x in (audio, frames, present)))
            return torch.softmax(logits, dim=1).numpy()

    def tagger(self, windows: np.ndarray) -> np.ndarray:
        if self._tagger is None:
            raise RuntimeError("this bundle has no tagger")
        with torch.inference_mode():
            mel = self._tagger_frontend(torch.from_numpy(writable_array(windows, np.float32)))
            return torch.softmax(self._tagger(mel), dim=1).numpy()
