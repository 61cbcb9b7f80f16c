"""The bench's test media, cut from the bundled example clip with ffmpeg: a clip whose instrument changes
at known times (for switch detection) and the example looped to a given length (for offline throughput)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from streamrec.core.assets import EXAMPLE_CLIP, EXAMPLE_SEGMENTS
from streamrec.core.errors import UserError

# Order of the example clip's four instruments in the switch clip: every neighbour pair differs and
# every instrument follows every other at least once.
SWITCH_ORDER = (0, 1, 2, 3, 1, 0, 3, 2, 0, 2, 1, 3)


def _ffmpeg(*args: str) -> None:
    try:
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("ffmpeg is not installed; scripts/install.sh installs it") from None
    except subprocess.CalledProcessError as e:
        raise UserError(f"ffmpeg failed: {e.stderr.strip().splitlines()[-1] if e.stderr else e}") from e


def make_switch_clip(out: Path, piece_seconds: float, pieces: int) -> list[tuple[float, str]]:
    """Cuts pieces of the example clip's instrument segments into a clip whose instrument changes every
    piece_seconds; returns (media time, class) of every change, the first piece's start included."""
    segments = json.loads(EXAMPLE_SEGMENTS.read_text())["segments"]
    order = [SWITCH_ORDER[i % len(SWITCH_ORDER)] % len(segments) for i in range(pieces)]
    filters, inputs = [], []
    for i, index in enumerate(order):
        segment = segments[index]
        # Skip the first second of each segment, so no piece starts at the example's own change.
        start = segment["start"] + min(1.0, max(0.0, segment["end"] - segment["start"] - piece_seconds))
        end = start + piece_seconds
        filters.append(f"[0:v]trim={start}:{end},setpts=PTS-STARTPTS[v{i}]")
        filters.append(f"[0:a]atrim={start}:{end},asetpts=PTS-STARTPTS[a{i}]")
        inputs.append(f"[v{i}][a{i}]")
    graph = ";".join(filters) + ";" + "".join(inputs) + f"concat=n={len(order)}:v=1:a=1[v][a]"
    _ffmpeg(
        "-i",
        str(EXAMPLE_CLIP),
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "10",
        "-c:a",
        "aac",
        str(out),
    )
    return [(i * piece_seconds, segments[index]["class"]) for i, index in enumerate(order)]


def make_long_clip(out: Path, seconds: float) -> None:
    """The example clip looped to `seconds`: video copied, audio encoded once. Copied AAC would repeat its
    encoder delay at every loop, 46 ms of samples its timestamps do not count: after an hour the audio runs
    7 s ahead of the video, and a real-time run of it falls behind the clock once that passes 2 s."""
    _ffmpeg(
        "-stream_loop", "-1", "-i", str(EXAMPLE_CLIP), "-t", f"{seconds:g}", "-c:v", "copy", "-c:a", "aac", str(out)
    )  # fmt: skip
