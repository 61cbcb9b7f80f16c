"""`streamrec data build`: plans, renders and writes the instrument video corpus.

Every random choice of a clip is drawn in the main process into a `ClipPlan` from the build seed,
so the corpus is identical for a seed whatever the number of workers. Workers only render.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from streamrec.core.classes import DEFAULT_CLASSES
from streamrec.core.errors import UserError
from streamrec.train.corpus import audio as A
from streamrec.train.corpus import images as I
from streamrec.train.corpus.melodies import drum_patterns, fit_to_range, load_melodies
from streamrec.train.corpus.plan import BuildOptions, ClipPlan, SourceBank, Voice
from streamrec.train.corpus.preview import write_previews
from streamrec.train.corpus.records import write_labels, write_readme
from streamrec.train.corpus.sources import (
    INSTRUMENTS,
    LMMS_SAMPLES,
    cache_dir,
    check_sources,
    hydrogen_kits,
    lmms_samples,
    soundfonts,
)

log = logging.getLogger(__name__)

SPLIT_SHARES = {"train": 0.70, "val": 0.15, "test": 0.15}  # as in the seed paper
AUDIO_ONLY_SHARE = 0.06  # clips without a video stream
VIDEO_ONLY_SHARE = 0.06  # clips without an audio stream
SECOND_INSTRUMENT_SHARE = 0.2  # clips with a quiet second instrument (multi-label)


def split_ids(ids: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """Partitions ids 70/15/15; every split gets at least one id when there are three or more."""
    shuffled = [ids[i] for i in rng.permutation(len(ids))]
    n = len(shuffled)
    n_val = max(1, round(n * SPLIT_SHARES["val"])) if n >= 3 else 0
    n_test = max(1, round(n * SPLIT_SHARES["test"])) if n >= 3 else 0
    return {
        "train": shuffled[: n - n_val - n_test] or shuffled,
        "val": shuffled[n - n_val - n_test : n - n_test] or shuffled,
        "test": shuffled[n - n_test :] or shuffled,
    }


def split_counts(count: int) -> dict[str, int]:
    """Clips per split for a class of `count` clips: 70/15/15, with at least one val and one test clip from 3 up."""
    n_val = max(1, round(count * SPLIT_SHARES["val"])) if count >= 3 else 0
    n_test = max(1, round(count * SPLIT_SHARES["test"])) if count >= 3 else 0
    return {"train": count - n_val - n_test, "val": n_val, "test": n_test}


def split_of(position: int, count: int) -> str:
    """The split of the position-th clip of a class, interleaved so that a partial build is balanced."""
    counts = split_counts(count)
    order = np.random.default_rng(count).permutation(count)
    rank = int(np.where(order == position)[0][0])
    return "train" if rank < counts["train"] else "val" if rank < counts["train"] + counts["val"] else "test"


def gather_sources(classes: tuple[str, ...], seed: int, status=None) -> SourceBank:
    melodies = load_melodies(progress=status)
    patterns = drum_patterns()
    # The split of a melody, pattern or image depends on the seed only, not on the classes chosen.
    rng = np.random.default_rng([seed, 1])
    images, licences = {}, {}
    for name in DEFAULT_CLASSES:
        found = I.source_images(name)
        licences.update({img.id: img.licence_key for img in found})
        images[name] = split_ids(
            [img.id for img in found], np.random.default_rng([seed, 2, DEFAULT_CLASSES.index(name)])
        )
    return SourceBank(
        melodies={m.id: m for m in melodies},
        patterns={p.id: p for p in patterns},
        melody_split=split_ids([m.id for m in melodies], rng),
        pattern_split=split_ids([p.id for p in patterns], rng),
        image_split={name: images[name] for name in classes},
        image_licence=licences,
        soundfonts=soundfonts(),
        kits=hydrogen_kits(),
        samples=lmms_samples(),
    )


def choose_voice(class_name: str, split: str, bank: SourceBank, rng: np.random.Generator, gain_db: float) -> Voice:
    spec = INSTRUMENTS[class_name]
    if spec.drums:
        melody_id = str(rng.choice(bank.pattern_split[split]))
        if bank.kits and rng.random() < 0.5:
            source = f"hydrogen:{bank.kits[int(rng.integers(len(bank.kits)))].name}"
        else:
            soundfont = bank.soundfonts[int(rng.integers(len(bank.soundfonts)))]
            source = f"{soundfont.name}:kit {int(rng.choice(bank.gm_kits))}"
    else:
        melody_id = str(rng.choice(bank.melody_split[split]))
        soundfont = bank.soundfonts[int(rng.integers(len(bank.soundfonts)))]
        source = f"{soundfont.name}:program {int(rng.choice(spec.programs))}"
    return Voice(class_name, source, melody_id, gain_db)


def with_recording(voice: Voice, bank: SourceBank, share: float, rng: np.random.Generator) -> Voice:
    """A share of the voices of a class with one-note recordings play one instead of the soundfont. Drawn
    from a generator of its own (not the one that planned the rest of the clip), so a clip that does not change
    is planned, and rendered, exactly as without the recordings."""
    recordings = bank.samples.get(voice.class_name)
    if not recordings or rng.random() >= share:
        return voice
    return replace(voice, source=f"lmms:{recordings[int(rng.integers(len(recordings)))].stem}")


def plan_clips(options: BuildOptions, bank: SourceBank) -> list[ClipPlan]:
    plans = []
    for class_name in options.classes:
        class_index = DEFAULT_CLASSES.index(class_name) if class_name in DEFAULT_CLASSES else len(plans)
        for i in range(options.clips_per_class):
            rng = np.random.default_rng([options.seed, class_index, i])
            split = split_of(i, options.clips_per_class)
            modality = rng.random()
            has_audio, has_video = (
                modality >= VIDEO_ONLY_SHARE,
                not (VIDEO_ONLY_SHARE <= modality < VIDEO_ONLY_SHARE + AUDIO_ONLY_SHARE),
            )
            voices = [choose_voice(class_name, split, bank, rng, 0.0)]
            if has_audio and rng.random() < SECOND_INSTRUMENT_SHARE:
                others = [c for c in options.classes if c != class_name] or [
                    c for c in DEFAULT_CLASSES if c != class_name
                ]
                voices.append(choose_voice(str(rng.choice(others)), split, bank, rng, float(rng.uniform(-16, -9))))
            sampler_rng = np.random.default_rng([options.seed, class_index, i, 1])
            voices = [with_recording(v, bank, options.recordings_share, sampler_rng) for v in voices]
            extension = ".mp4" if has_video else str(rng.choice([".m4a", ".wav"]))
            plans.append(
                ClipPlan(
                    index=i,
                    class_name=class_name,
                    split=split,
                    rel_path=f"clips/{class_name}/{class_name}_{i:04d}{extension}",
                    seed=int(rng.integers(2**31)),
                    has_audio=has_audio,
                    has_video=has_video,
                    image_id=str(rng.choice(bank.image_split[class_name][split])),
                    voices=tuple(voices),
                    bpm=float(rng.uniform(70, 140)),
                )
            )
    return plans


# --- rendering (runs in worker processes) -------------------------------------------------------


def _render_voice(voice: Voice, bank: SourceBank, bpm: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    spec = INSTRUMENTS[voice.class_name]
    kind, _, detail = voice.source.partition(":")
    if spec.drums:
        pattern = bank.patterns[voice.melody_id]
        if kind == "hydrogen":
            kit = next(k for k in bank.kits if k.name == detail)
            return A.render_hydrogen(pattern, kit, bpm, seconds, rng)
        return A.render_gm_drums(pattern, int(detail.split()[-1]), kind, bpm, seconds, rng, tuple(bank.soundfonts))
    beats = seconds * bpm / 60
    # A recording is stretched only so far around the note it was played at; a soundfont covers the range.
    low, high = (
        (A.SAMPLER_CENTRE - A.SAMPLER_SPAN, A.SAMPLER_CENTRE + A.SAMPLER_SPAN) if kind == "lmms" else spec.pitch_range
    )
    notes = fit_to_range(A.loop_notes(list(bank.melodies[voice.melody_id].notes), beats, rng), low, high, rng)
    if spec.polyphonic and rng.random() < 0.6:
        style = {"guitar": "strum", "banjo": "roll"}.get(voice.class_name, "block")
        notes = notes + A.accompaniment(notes, style, low, beats, rng)
    events = A.humanize(notes, rng, base_velocity=int(rng.integers(70, 110)))
    if kind == "lmms":
        recording = next(p for p in bank.samples[voice.class_name] if p.stem == detail)
        return A.render_sampled(events, bpm, recording, seconds)
    return A.soundfont_synth(tuple(bank.soundfonts)).render(events, bpm, int(detail.split()[-1]), kind, seconds)


def render_audio(
    plan: ClipPlan, bank: SourceBank, seconds: float, speech: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Instrument(s) recorded the way a phone records a room: reverb, noise, speech, band limits, clipping."""
    mix = np.zeros(round(seconds * A.AUDIO_RATE), np.float32)
    for voice in plan.voices:
        part = _render_voice(voice, bank, plan.bpm, seconds, rng)
        level = A.rms(part) if A.rms(part) > 1e-6 else 1.0
        mix += part / level * 10 ** (voice.gain_db / 20)
    if rng.random() < 0.7:
        mix = A.room_reverb(mix, rt60=float(rng.uniform(0.2, 1.2)), wet=float(rng.uniform(0.1, 0.5)), rng=rng)
    if rng.random() < 0.35 and speech:
        line = speech[int(rng.integers(len(speech)))]
        talk = np.zeros_like(mix)
        start = int(rng.integers(0, max(1, len(mix) - len(line))))
        talk[start : start + len(line)] = line[: len(mix) - start]
        mix = A.mix_at_snr(mix, talk, float(rng.uniform(3, 15)))
    if rng.random() < 0.8:
        if bank.noise:  # a stretch of a recorded noise bed
            bed = A.recording(bank.noise[int(rng.integers(len(bank.noise)))])
            start = int(rng.integers(0, max(1, len(bed) - len(mix))))
            noise = bed[start : start + len(mix)]
        else:
            noise = A.coloured_noise(len(mix), str(rng.choice(["white", "pink", "brown"])), rng)
        mix = A.mix_at_snr(mix, noise, float(rng.uniform(8, 35)))
    if rng.random() < 0.25:
        mix = A.phone_band(mix)
    mix = A.set_level(mix, float(rng.uniform(-28, -14)))
    if rng.random() < 0.15:
        mix = A.hard_clip(mix, float(rng.uniform(2, 6)))
    return mix


def encode(path: Path, frames: np.ndarray | None, audio_wav: Path | None, rng: np.random.Generator) -> None:
    """Writes an H.264 + AAC mp4 (either stream may be absent), an AAC .m4a, or a .wav.

    Bit rates and quality are drawn per clip: low ones leave the codec artefacts of shared videos.
    One encoder thread per clip: parallelism is across clips, and single-threaded x264 is deterministic.
    """
    cmd = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-threads", "1"]
    if frames is not None:
        cmd += [
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{frames.shape[2]}x{frames.shape[1]}",
            "-r",
            str(I.VIDEO_FPS),
            "-i",
            "pipe:0",
        ]
    if audio_wav is not None:
        cmd += ["-i", str(audio_wav)]
    if frames is not None:
        cmd += [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            str(int(rng.integers(23, 36))),
            "-pix_fmt",
            "yuv420p",
            "-x264-params",
            "threads=1",
        ]
    if audio_wav is not None and path.suffix != ".wav":
        cmd += ["-c:a", "aac", "-b:a", f"{int(rng.choice([32, 48, 64, 96, 128]))}k"]
    cmd += ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]
    if path.suffix in (".mp4", ".m4a"):
        cmd += ["-movflags", "+faststart"]
    cmd.append(str(path))
    done = subprocess.run(cmd, input=frames.tobytes() if frames is not None else None, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {path.name}: {done.stderr.decode(errors='replace').strip()[-300:]}")


_WORKER: dict = {}


def _init_worker(bank: SourceBank, seconds: float, out: Path, speech_dir: Path) -> None:
    # Each worker renders one clip at a time; one BLAS/torch thread avoids oversubscribing the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch  # here, after OMP_NUM_THREADS: a spawned worker reads it when torch loads

    torch.set_num_threads(1)
    speech = [A.recording(path) for path in bank.speech] if bank.speech else A.speech_pool(speech_dir)
    _WORKER.update(bank=bank, seconds=seconds, out=out, speech=speech)
    A.soundfont_synth(tuple(bank.soundfonts))  # load the soundfonts now, not inside the first clip


def render_media(
    plan: ClipPlan, bank: SourceBank, seconds: float, speech: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A clip's audio (samples,) at AUDIO_RATE and frames (n, height, width, 3) at VIDEO_FPS; None if absent."""
    audio = render_audio(plan, bank, seconds, speech, rng) if plan.has_audio else None
    frames = None
    if plan.has_video:
        filming = I.plan_filming(rng, seconds)
        frames = I.film(I.load_rgba(plan.image_id), filming, seconds, rng)
    return audio, frames


def write_clip(path: Path, audio: np.ndarray | None, frames: np.ndarray | None, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamrec-clip-") as tmp:
        wav = None
        if audio is not None:
            wav = path if path.suffix == ".wav" else Path(tmp) / "audio.wav"
            A.write_wav(wav, audio)
        if path.suffix != ".wav":
            encode(path, frames, wav, rng)


def render_clip(plan: ClipPlan) -> ClipPlan:
    rng = np.random.default_rng(plan.seed)
    audio, frames = render_media(plan, _WORKER["bank"], _WORKER["seconds"], _WORKER["speech"], rng)
    write_clip(_WORKER["out"] / plan.rel_path, audio, frames, rng)
    return plan


def _render_share(share: list[ClipPlan], init: tuple, done: multiprocessing.Queue) -> None:
    """A worker process: renders its share of the clips in order, reporting each (or its error) on `done`."""
    try:
        _init_worker(*init)
        for plan in share:
            render_clip(plan)
            done.put(None)
    except BaseException as e:  # reported to the main process, which raises it
        done.put(f"{type(e).__name__}: {e} (clip {plan.rel_path if 'plan' in locals() else '-'})")


def render_all(plans: list[ClipPlan], bank: SourceBank, options: BuildOptions, speech_dir: Path) -> Iterator[None]:
    """Renders every clip in `options.workers` processes, yielding once per clip done.

    Worker w renders clips w, w + workers, ... in order. The soundfont synth keeps a trace of the
    clips it rendered before (a few 1e-3 of full scale), so a fixed assignment, not a shared task
    queue, is what makes a build repeatable byte for byte for a seed and a worker count.
    """
    workers = max(1, min(options.workers, len(plans)))
    context = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
    done = context.Queue()
    init = (bank, options.seconds, options.out, speech_dir)
    processes = [
        context.Process(target=_render_share, args=(plans[w::workers], init, done), daemon=True) for w in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for _ in plans:
            while True:
                try:
                    message = done.get(timeout=1.0)
                    break
                except queue.Empty:
                    if any(p.exitcode not in (None, 0) for p in processes):
                        raise RuntimeError("a corpus worker died unexpectedly") from None
            if message is not None:
                raise RuntimeError(f"rendering failed: {message}")
            yield None
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


# --- the command --------------------------------------------------------------------------------


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".streamrec-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {out}: {e.strerror or e}") from e


def build(options: BuildOptions, console=None) -> list[ClipPlan]:
    """Builds the corpus into options.out; returns the clip plans in labels.csv order."""
    console = console or Console(stderr=True)
    _check_out(options.out)
    problems = check_sources()
    if options.recordings_share > 0 and not lmms_samples():
        problems.append(f"no LMMS instrument recordings in {LMMS_SAMPLES}: install Debian lmms-common")
    if problems:
        raise UserError("missing training sources: " + "; ".join(problems))
    started = time.monotonic()
    with console.status("gathering sources (melodies, drum kits, pictures)"):
        bank = gather_sources(options.classes, options.seed, status=lambda s: console.log(s))
    missing = [c for c in options.classes if not any(bank.image_split[c].values())]
    if missing:
        raise UserError(f"no source image for class(es) {', '.join(missing)}: run `streamrec data sources --fetch`")
    plans = plan_clips(options, bank)
    speech_dir = cache_dir() / "speech"
    A.speech_pool(speech_dir)  # synthesize once, before the workers read it
    columns = (
        TextColumn("[bold]building corpus"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("clips", total=len(plans))
        for _ in render_all(plans, bank, options, speech_dir):
            progress.advance(task)
    write_labels(options.out, plans)
    write_readme(options, plans, bank, time.monotonic() - started)
    if options.preview:
        with console.status("writing preview sheets"):
            write_previews(options.out, plans)
    return plans
