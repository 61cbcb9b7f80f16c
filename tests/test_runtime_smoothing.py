"""Temporal smoothing and hysteresis on synthetic score sequences: steady clips do not flicker,
background (silence, speech, noise) turns nothing on."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.runtime.smoothing import Smoother, SmoothingOptions

CLASSES = ("cello", "drums", "flute", "piano", "violin")
HOP = 0.5  # seconds between updates


def scores(violin: float, piano: float = 0.0) -> np.ndarray:
    """A softmax-like vector: the mass left by violin and piano spread over the three other classes."""
    rest = max(0.0, 1 - violin - piano) / 3
    return np.array([rest, rest, rest, piano, violin])


def run(smoother: Smoother, sequence, background=None, energy=-20.0) -> list[tuple[str, ...]]:
    out = []
    for i, fused in enumerate(sequence):
        b = background[i] if isinstance(background, list) else background
        out.append(smoother.update(i * HOP, fused, b, energy).active)
    return out


def toggles(active: list[tuple[str, ...]], name: str) -> int:
    states = [name in a for a in active]
    return sum(a != b for a, b in zip(states, states[1:]))


def test_a_steady_noisy_clip_does_not_flicker() -> None:
    rng = np.random.default_rng(0)
    # a violin whose score wanders around the on threshold (0.4) from window to window
    sequence = [scores(float(np.clip(rng.normal(0.45, 0.12), 0, 1))) for _ in range(120)]
    raw = [("violin",) if fused[-1] >= 0.4 else () for fused in sequence]
    assert toggles(raw, "violin") > 20  # a bare threshold would flicker
    active = run(Smoother(CLASSES), sequence, background=0.05)
    assert toggles(active, "violin") <= 1 and "violin" in active[-1]
    assert all(set(a) <= {"violin"} for a in active)  # the rest of the mass never turns on


def test_silence_speech_and_noise_give_nothing_active() -> None:
    peaked = [scores(0.95)] * 20  # the fusion network insists on a violin...
    assert run(Smoother(CLASSES), peaked, background=None, energy=-70.0) == [()] * 20  # ...in silence
    assert run(Smoother(CLASSES), peaked, background=0.9) == [()] * 20  # ...in speech or noise
    gated = Smoother(CLASSES).update(0.0, scores(0.95), background=0.9)
    assert gated.gated and not gated.scores.any()


def test_hysteresis_and_minimum_hold() -> None:
    # no averaging, and one update over the on threshold turns a class on
    options = SmoothingOptions(alpha=1.0, on_threshold=0.5, off_threshold=0.3, min_hold=1.0, on_updates=1)
    smoother = Smoother(CLASSES, options)
    sequence = [0.6, 0.35, 0.45, 0.6, 0.1, 0.1, 0.1, 0.6]
    active = [("violin" in smoother.update(i * HOP, scores(v)).active) for i, v in enumerate(sequence)]
    # on at 0.6; stays on between the thresholds; at 0.1 it is held until 1 s after it turned on
    assert active == [True, True, True, True, False, False, False, True]
    held = Smoother(CLASSES, options)
    held.update(0.0, scores(0.9))
    assert "violin" in held.update(0.5, scores(0.0)).active  # 0.5 s < min_hold
    assert "violin" not in held.update(1.0, scores(0.0)).active


def test_one_loud_update_turns_nothing_on_two_in_a_row_do() -> None:
    smoother = Smoother(CLASSES, SmoothingOptions(alpha=1.0, on_threshold=0.5))  # no averaging: each update as is
    active = run(smoother, [scores(0.0), scores(0.9), scores(0.0), scores(0.9), scores(0.9)], background=0.0)
    assert [("violin" in a) for a in active] == [False, False, False, False, True]
    with pytest.raises(ValueError, match="on_updates"):
        SmoothingOptions(on_updates=0)


def test_the_moving_average_smooths_a_single_spike() -> None:
    smoother = Smoother(CLASSES, SmoothingOptions(alpha=0.3))
    active = run(smoother, [scores(0.0)] * 4 + [scores(1.0)] + [scores(0.0)] * 4, background=0.0)
    assert all("violin" not in a for a in active)


def test_two_instruments_can_be_active_together_and_are_sorted_by_score() -> None:
    active = run(Smoother(CLASSES), [scores(0.5, piano=0.42)] * 6, background=0.0)
    assert active[-1] == ("violin", "piano")


def test_reset_forgets_and_time_must_not_go_back() -> None:
    smoother = Smoother(CLASSES)
    smoother.update(5.0, scores(0.9))
    with pytest.raises(ValueError, match="go back"):
        smoother.update(4.0, scores(0.9))
    smoother.reset()
    assert smoother.update(0.0, scores(0.0)).active == ()
    with pytest.raises(ValueError, match="5 scores"):
        smoother.update(1.0, np.zeros(3))


@pytest.mark.parametrize(
    "bad",
    [{"alpha": 0.0}, {"on_threshold": 0.2, "off_threshold": 0.3}, {"min_hold": -1.0}, {"background_max": 0.0}],
)
def test_options_are_validated(bad: dict) -> None:
    with pytest.raises(ValueError):
        SmoothingOptions(**bad)


def test_a_confident_audio_turns_the_new_instrument_on_before_the_fused_scores_follow() -> None:
    # After a change from violin to piano the fused scores still lean on frames of the violin;
    # the audio network already hears the piano.
    fused = [scores(0.9)] * 6 + [scores(0.8, 0.15)] * 3
    audio = [scores(0.95)] * 6 + [scores(0.02, 0.97)] * 3

    def first_piano(options: SmoothingOptions) -> float | None:
        smoother = Smoother(CLASSES, options)
        for i, (f, a) in enumerate(zip(fused, audio)):
            if "piano" in smoother.update(i * HOP, f, 0.05, -20.0, a).active:
                return i * HOP
        return None

    assert first_piano(SmoothingOptions()) == 7 * HOP  # at the second update in a row that hears it
    assert first_piano(SmoothingOptions(audio_on_updates=1)) == 6 * HOP  # one window would do, if allowed
    assert first_piano(SmoothingOptions(audio_on=None)) is None  # the fused scores alone never get there
    # a confident audio network on a background update turns nothing on
    smoother = Smoother(CLASSES)
    assert smoother.update(0.0, scores(0.1), 0.9, -20.0, scores(0.0, 0.99)).active == ()
    with pytest.raises(ValueError, match="audio_on"):
        SmoothingOptions(audio_on=0.2)
    with pytest.raises(ValueError, match="audio_on_updates"):
        SmoothingOptions(audio_on_updates=0)


def test_one_confident_window_in_an_instruments_tail_lights_nothing() -> None:
    # As at the end of the example clip: an instrument fades and one window sounds like a violin to the audio
    # network (there the trumpet, here the piano).
    smoother = Smoother(CLASSES)
    for i in range(6):
        assert "piano" in smoother.update(i * HOP, scores(0.1, 0.8), 0.05, -20.0, scores(0.05, 0.9)).active or i < 1
    tail = smoother.update(6 * HOP, scores(0.3, 0.6), 0.05, -30.0, scores(0.93, 0.02))
    assert tail.active == ("piano",)
    again = smoother.update(7 * HOP, scores(0.3, 0.6), 0.05, -30.0, scores(0.05, 0.9))
    assert again.active == ("piano",)  # the run of confident violin windows was broken


def test_the_audio_alone_lights_nothing_the_frames_contradict() -> None:
    # Speech over a scene with nobody playing: the audio network hears a flute at 0.95 and the gate misses it;
    # the frame network gives flute almost nothing. With audio_on_video the early turn-on needs the frames.
    fused = [scores(0.05)] * 6  # the product of audio and frames stays low
    audio = [np.array([0.01, 0.01, 0.95, 0.02, 0.01])] * 6
    empty_scene = np.array([0.3, 0.2, 0.02, 0.28, 0.2])

    def lit(options: SmoothingOptions, video: np.ndarray | None) -> set[str]:
        smoother = Smoother(CLASSES, options)
        return {
            c
            for i, (f, a) in enumerate(zip(fused, audio))
            for c in smoother.update(i * HOP, f, 0.1, -25.0, a, video).active
        }

    assert lit(SmoothingOptions(), empty_scene) == {"flute"}  # the audio alone decides by default
    assert lit(SmoothingOptions(audio_on_video=0.1), empty_scene) == set()
    assert lit(SmoothingOptions(audio_on_video=0.1), None) == {"flute"}  # without frames the audio still decides
    # a change the frames have begun to show still turns on early
    first_frames = np.array([0.1, 0.1, 0.3, 0.3, 0.2])
    assert lit(SmoothingOptions(audio_on_video=0.1), first_frames) == {"flute"}
    with pytest.raises(ValueError, match="audio_on_video"):
        SmoothingOptions(audio_on_video=1.5)


def test_a_confident_picture_turns_on_what_the_sound_gets_wrong() -> None:
    # An accordion heard as a trumpet-like violin and seen as an accordion (here: cello): the product of the two
    # stays low for every class, so only the picture's own early turn-on lights the right class.
    fused = [np.array([0.2, 0.02, 0.02, 0.02, 0.2])] * 4
    audio = np.array([0.03, 0.01, 0.01, 0.01, 0.94])
    video = np.array([0.95, 0.01, 0.01, 0.02, 0.01])

    def lit(options: SmoothingOptions, background: float = 0.05, fps: float | None = None) -> list[tuple[str, ...]]:
        smoother = Smoother(CLASSES, options)
        return [
            # frame_time: the newest frame's media time at `fps` (None: every update brings a new frame)
            smoother.update(
                i * HOP, f, background, -20.0, audio, video, None if fps is None else (i * HOP) // (1 / fps)
            ).active
            for i, f in enumerate(fused)
        ]

    assert "cello" not in {c for a in lit(SmoothingOptions(audio_on=None)) for c in a}  # off by default
    seen = lit(SmoothingOptions(audio_on=None, video_on=0.9))
    assert seen[0] == () and seen[1] == ("cello",)  # from the second frame in a row, not from one
    assert lit(SmoothingOptions(audio_on=None, video_on=0.9, video_on_frames=3))[1] == ()
    # at 1 fps two updates share one frame: the second frame comes with the third update
    assert lit(SmoothingOptions(audio_on=None, video_on=0.9), fps=1.0)[:3] == [(), (), ("cello",)]
    assert lit(SmoothingOptions(audio_on=None, video_on=0.9), background=0.9) == [()] * 4  # never in background
    with pytest.raises(ValueError, match="video_on"):
        SmoothingOptions(video_on=0.1)
    with pytest.raises(ValueError, match="video_on_frames"):
        SmoothingOptions(video_on_frames=0)
