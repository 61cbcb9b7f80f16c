"""Runs the live runtime from Python on a media file and handles each prediction in a callback.

.venv/bin/python examples/run_from_python.py CLIP.mp4 [MODEL_DIR]

The same Runtime runs URLs (SourceSpec("url", "rtsp://...")), cameras (SourceSpec("camera", "0"))
and microphones (SourceSpec("microphone", "")); RuntimeOptions adds the websocket server
(ws=("127.0.0.1", 8765)), a JSON-lines file, real-time pacing, and the smoothing thresholds.
"""

import sys
from pathlib import Path

from streamrec import Runtime, RuntimeOptions
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import parse_source


def on_event(event: dict) -> None:
    if event["type"] == "prediction":
        best = event["labels"][0]
        print(
            f"{event['stream']} t={event['t']:.1f}s best={best['name']} ({best['score']:.2f}) active={event['active']}"
        )
    else:
        print(f"{event['stream']}: {event['state']} {event['detail']}")


if __name__ == "__main__":
    clip = sys.argv[1] if len(sys.argv) > 1 else "streamrec/assets/example.mp4"
    model = Path(sys.argv[2]) if len(sys.argv) > 2 else None  # None: the bundled model
    runtime = Runtime([parse_source(clip)], RuntimeOptions(bundle=model), sinks=[CallbackSink(on_event)])
    summary = runtime.run()  # blocks until the clip ends; runtime.stop() from another thread ends it early
    for stream, result in summary.streams.items():
        print(f"{stream}: {result.state}, {result.updates} updates, latency p50 {result.latency_p50_ms or 0:.0f} ms")
