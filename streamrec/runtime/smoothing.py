"""Running temporal smoothing and hysteresis over a stream's fused scores: the `active` set.

Pure logic, one object per stream. Each update: scores gated to zero when the audio says nothing
plays (the audio network's background probability, or a level under the energy floor), an
exponential moving average, then per class an on threshold (reached in consecutive updates), a lower off
threshold and a minimum hold, so that a steady clip does not flicker, one window turns nothing on, and
silence, speech and noise turn nothing on.
(a style guide would call this stage fusion.py; the fusion network itself is streamrec/core/models/fusion.py.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.core.bundle import Bundle
from streamrec.runtime.types import Recognition


@dataclass(frozen=True)
class SmoothingOptions:
    alpha: float = 0.5  # weight of the newest scores in the moving average (hop 0.5 s: about 1 s of memory)
    on_threshold: float = 0.4  # smoothed score at which a class turns on (softmax: two instruments ~0.45 each)
    off_threshold: float = 0.25  # smoothed score under which it may turn off again
    min_hold: float = 1.5  # seconds of media time a class stays on once on
    # A class turns on once its smoothed score has reached on_threshold in this many consecutive updates (or
    # through the audio's early turn-on below, which needs audio_on_updates): never from one window.
    on_updates: int = 2
    background_max: float = 0.5  # "no instrument" probability above which the update counts as background
    energy_floor_db: float = -50.0  # dBFS: a quieter audio window counts as silence
    # Sound changes before the picture does: the fused scores weigh k seconds of frames, so after a change
    # of instrument they follow the audio only once most frames show the new one (2-3 s). A class the audio
    # network alone gives at least this probability turns on early. None: only the fused scores count.
    audio_on: float | None = 0.9
    # ...in this many consecutive updates, not from one window: an instrument's decaying tail or a single
    # noisy window must not light a class (one window did, at the end of the example clip).
    audio_on_updates: int = 2
    # With frames, the early turn-on also needs the frame network to give the class at least this probability
    # (mean over the update's frames): a sound the picture contradicts, such as speech heard as flute over a
    # scene with no instrument, does not light a class. None: the audio alone decides.
    audio_on_video: float | None = None
    # The picture can be surer than the sound (an accordion heard as trumpet, its picture read right): a class
    # the frame network alone gives at least this probability (the frame modality: FusionRule.video_frames) in
    # video_on_frames consecutive frames turns on too, except during background. Frames, not updates: at 1 fps
    # two updates share a frame, and one frame must not light a class. None: off.
    video_on: float | None = None
    video_on_frames: int = 2

    @classmethod
    def of_bundle(cls, bundle: Bundle) -> SmoothingOptions:
        """The settings `streamrec tune` chose for a bundle on source-disjoint long clips (its manifest's
        "smoothing"), or the defaults."""
        return cls(**bundle.manifest.get("smoothing", {}).get("options", {}))

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if not 0 < self.off_threshold <= self.on_threshold <= 1:
            raise ValueError(
                f"thresholds must satisfy 0 < off <= on <= 1, got off {self.off_threshold} and on {self.on_threshold}"
            )
        if self.min_hold < 0:
            raise ValueError(f"the minimum hold must be zero or more seconds, got {self.min_hold}")
        if not 0 < self.background_max <= 1:
            raise ValueError(f"background_max must be in (0, 1], got {self.background_max}")
        if self.on_updates < 1:
            raise ValueError(f"on_updates must be at least 1, got {self.on_updates}")
        if self.audio_on is not None and not self.on_threshold <= self.audio_on <= 1:
            raise ValueError(f"audio_on must be in [on_threshold, 1], got {self.audio_on}")
        if self.audio_on_updates < 1:
            raise ValueError(f"audio_on_updates must be at least 1, got {self.audio_on_updates}")
        if self.audio_on_video is not None and not 0 <= self.audio_on_video <= 1:
            raise ValueError(f"audio_on_video must be in [0, 1], got {self.audio_on_video}")
        if self.video_on is not None and not self.on_threshold <= self.video_on <= 1:
            raise ValueError(f"video_on must be in [on_threshold, 1], got {self.video_on}")
        if self.video_on_frames < 1:
            raise ValueError(f"video_on_frames must be at least 1, got {self.video_on_frames}")


@dataclass(frozen=True)
class Smoothed:
    """scores: (classes,) smoothed; active: class names on, highest score first; gated: the update
    counted as background (silence, speech, noise)."""

    scores: np.ndarray
    active: tuple[str, ...]
    gated: bool


class Smoother:
    """One stream's smoothing state; reset() when the stream starts over."""

    def __init__(self, classes: Sequence[str], options: SmoothingOptions | None = None) -> None:
        if not classes:
            raise ValueError("the smoother needs at least one class")
        self.classes = tuple(classes)
        self.options = options or SmoothingOptions()
        self.reset()

    def reset(self) -> None:
        self._scores: np.ndarray | None = None
        self._on_since = np.full(len(self.classes), np.nan)  # media time each class turned on; NaN = off
        self._loud_run = np.zeros(len(self.classes), np.int64)  # consecutive updates with smoothed >= on_threshold
        self._heard_run = np.zeros(len(self.classes), np.int64)  # consecutive updates with audio >= audio_on
        self._seen_run = np.zeros(len(self.classes), np.int64)  # consecutive frames with video >= video_on
        self._last_frame_time: float | None = None
        self._last_t: float | None = None

    def is_background(self, background: float | None, energy_db: float | None) -> bool:
        o = self.options
        return (background is not None and background > o.background_max) or (
            energy_db is not None and energy_db < o.energy_floor_db
        )

    def follow(self, t: float, said: Recognition) -> Smoothed:
        """update() with what the recognition stage said about the update at media time t."""
        return self.update(t, said.fused, said.background, said.energy_db, said.audio, said.video, said.frame_time)

    def update(
        self,
        t: float,
        fused: np.ndarray,
        background: float | None = None,
        energy_db: float | None = None,
        audio: np.ndarray | None = None,
        video: np.ndarray | None = None,
        frame_time: float | None = None,
    ) -> Smoothed:
        """t: media time of the update in seconds (rising); fused: (classes,) scores in 0..1; audio and video:
        the audio and frame networks' (classes,) probabilities of this update, None without that modality;
        frame_time: media time of the newest frame behind `video` (None: every update counts as a new frame)."""
        if fused.shape != (len(self.classes),):
            raise ValueError(f"expected {len(self.classes)} scores, got shape {fused.shape}")
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"update times must not go back: {t:.3f} s after {self._last_t:.3f} s")
        self._last_t = t
        o = self.options
        gated = self.is_background(background, energy_db)
        x = np.zeros_like(fused, dtype=np.float64) if gated else fused.astype(np.float64)
        self._scores = x if self._scores is None else o.alpha * x + (1 - o.alpha) * self._scores
        on = ~np.isnan(self._on_since)
        self._loud_run = np.where(self._scores >= o.on_threshold, self._loud_run + 1, 0)
        loud = self._loud_run >= o.on_updates
        # One modality alone turning a class on early (_turn_on_early).
        if audio is not None and o.audio_on is not None:
            heard_now = (audio >= o.audio_on) & (not gated)
            if video is not None and o.audio_on_video is not None:
                heard_now &= video >= o.audio_on_video
            self._heard_run = np.where(heard_now, self._heard_run + 1, 0)
            loud |= self._turn_on_early(self._heard_run >= o.audio_on_updates)
        if video is not None and o.video_on is not None:
            new_frame = frame_time is None or frame_time != self._last_frame_time
            self._last_frame_time = frame_time
            sure = (video >= o.video_on) & (not gated)
            self._seen_run = np.where(sure, self._seen_run + int(new_frame), 0)
            loud |= self._turn_on_early(self._seen_run >= o.video_on_frames)
        turn_on = ~on & loud & (not gated)  # background never turns a class on
        held = t - np.where(on, self._on_since, t) >= o.min_hold
        turn_off = on & (self._scores < o.off_threshold) & held
        self._on_since[turn_on] = t
        self._on_since[turn_off] = np.nan
        active_index = np.flatnonzero(~np.isnan(self._on_since))
        active_index = active_index[np.argsort(-self._scores[active_index], kind="stable")]
        return Smoothed(self._scores.copy(), tuple(self.classes[i] for i in active_index), gated)

    def _turn_on_early(self, classes: np.ndarray) -> np.ndarray:
        """Marks `classes` (a mask) as loud through one modality alone. Their smoothed scores are raised to the on
        threshold too, so that a class is not dropped again at the end of its hold while the fused scores still
        catch up. Returns the mask."""
        self._scores[classes] = np.maximum(self._scores[classes], self.options.on_threshold)
        return classes
