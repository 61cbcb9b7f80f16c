"""Output durability (issue #20, items 5 to 8): a sink that fails fails the run, a stalled reader of
--jsonl holds up neither inference nor websocket clients, a run that cannot start keeps an existing
--jsonl file, and the eval JSON is strict JSON over a checked labels.csv."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streamrec.core.dataset import read_labels
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sinks import QueuedSink, SinkError
from streamrec.runtime.sources import SourceSpec

from .helpers import CLASSES


def _no_nan(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


# --- sinks -----------------------------------------------------------------------------------------


def test_jsonl_on_a_full_disk_fails_the_run_with_one_line(runtime_bundle: Path, runtime_clips: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "run", str(runtime_clips / "tone.wav"), "--model", str(runtime_bundle)]
        + ["--backend", "torch", "--no-view", "--jsonl", "/dev/full"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == ["error: writing /dev/full failed: No space left on device"], output[-2000:]


class _Blocking:
    """A sink whose send waits until released: a reader that stopped reading."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.got: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.release.wait(10)
        self.got.append(event)

    def close(self) -> None:
        pass

    def __str__(self) -> str:
        return "writing the test's sink"


def test_a_queued_sink_a_whole_queue_behind_fails_instead_of_losing_events() -> None:
    failures: list[SinkError] = []
    inner = _Blocking()
    sink = QueuedSink(inner, failures.append, maxsize=2, close_seconds=0.2)
    started = time.monotonic()
    for seq in range(4):  # one taken by the blocked thread, two queued, the fourth does not fit
        sink.send({"seq": seq})
        time.sleep(0.05)
    assert time.monotonic() - started < 1.0  # send never waits for the reader
    assert len(failures) == 1 and "fell 2 events behind" in str(failures[0])
    inner.release.set()
    sink.close()
    assert [e["seq"] for e in inner.got] == [0, 1, 2]  # what was taken is written, in order


def test_a_stalled_jsonl_pipe_delays_neither_websocket_clients_nor_windows(
    runtime_bundle: Path, runtime_clips: Path, tmp_path: Path
) -> None:
    from websockets.sync.client import connect

    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that does not read
    fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        while True:  # the pipe is full before the run starts: its first write blocks
            os.write(filler, b"\n" * 4096)
    except BlockingIOError:
        os.close(filler)
    options = RuntimeOptions(bundle=runtime_bundle, ws=("127.0.0.1", 0), wait_clients=1, jsonl=fifo)
    runtime = Runtime([SourceSpec("file", str(runtime_clips / "long.mp4"), "s", True)], options)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(runtime.run())
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert runtime.ready.wait(60) and runtime.ws_port
        received: list[tuple[float, dict[str, Any]]] = []
        with connect(f"ws://127.0.0.1:{runtime.ws_port}", open_timeout=10) as client:
            while True:
                event = json.loads(client.recv(timeout=10))  # before the fix: stuck behind the pipe
                received.append((time.monotonic(), event))
                if event["type"] == "status" and event["state"] == "ended":
                    break
        predictions = [(t, e) for t, e in received if e["type"] == "prediction"]
        assert len(predictions) >= 9  # 6 s at a 0.5 s hop
        gaps = [b[0] - a[0] for a, b in zip(predictions, predictions[1:])]
        assert max(gaps) < 1.5
        assert [e["seq"] for _, e in predictions] == list(range(len(predictions)))
        # The reader comes back: the file gets every event, in order, and the run ends well.
        data = b""
        deadline = time.monotonic() + 20
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                data += os.read(reader, 65536)
            except BlockingIOError:
                time.sleep(0.01)
        thread.join(5)
        while chunk := os.read(reader, 65536):
            data += chunk
    finally:
        runtime.stop()
        os.close(reader)
    summary = outcome[0]
    assert not isinstance(summary, Exception), summary
    assert summary.streams["s"].skipped == 0
    lines = [json.loads(line) for line in data.decode().splitlines() if line]
    assert [e["seq"] for e in lines if e["type"] == "prediction"] == [e["seq"] for _, e in predictions]


def test_a_run_that_cannot_start_keeps_an_existing_jsonl(
    runtime_bundle: Path, runtime_clips: Path, tmp_path: Path, streamrec_cli
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"kept": true}\n', encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = streamrec_cli(
            "run", str(runtime_clips / "tone.wav"), "--model", str(runtime_bundle), "--backend", "torch",
            "--no-view", "--ws", f"127.0.0.1:{port}", "--jsonl", str(events),
        )  # fmt: skip
    assert code == 2
    assert events.read_text(encoding="utf-8") == '{"kept": true}\n'


# --- eval ------------------------------------------------------------------------------------------


def test_eval_json_of_an_audio_only_dataset_is_strict_json(
    runtime_bundle: Path, make_dataset, tmp_path: Path, streamrec_cli
) -> None:
    data = make_dataset([("clips/flute.wav", "violin", "test"), ("clips/cello.m4a", "piano", "test")])
    out = tmp_path / "eval.json"
    code = streamrec_cli(
        "eval", str(data), "--model", str(runtime_bundle), "--json", str(out), "--workers", "1",
        "--plot", str(tmp_path / "eval.png"),
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text(encoding="utf-8"), parse_constant=_no_nan)
    assert result["audio"]["n"] == 2 and result["audio"]["hit1"] is not None
    assert result["video"]["n"] == 0
    assert result["video"]["hit1"] is None and result["video"]["hit3"] is None and result["video"]["f1_macro"] is None


def test_eval_of_an_empty_split_is_a_one_line_error(
    runtime_bundle: Path, make_dataset, tmp_path: Path, streamrec_cli, capsys
) -> None:
    data = make_dataset([("clips/flute.wav", "violin", "train"), ("clips/gone.wav", "piano", "test")])
    out = tmp_path / "eval.json"
    code = streamrec_cli("eval", str(data), "--model", str(runtime_bundle), "--json", str(out), "--workers", "1")
    assert code == 2
    assert "no usable clips in split 'test'" in capsys.readouterr().err
    assert not out.exists()


def test_labels_outside_the_dataset_and_duplicates_are_skipped_with_their_line(make_dataset, tmp_path: Path) -> None:
    outside = tmp_path / "x.mp4"
    outside.write_bytes(b"")
    data = make_dataset(
        [
            ("clips/violin.mp4", "violin", "test"),  # line 2
            ("../x.mp4", "violin", "test"),
            ("/etc/hostname", "piano", "test"),
            ("clips/sub/../violin.mp4", "violin", "test"),  # line 5: the same file as line 2
            ("clips/piano.mp4", "piano", "test"),
            ("clips/piano.mp4", "piano", "test"),
            ("clips/gone.mp4", "drums", "test"),
        ]
    )
    records, skipped = read_labels(data, CLASSES)
    assert [(r.rel_path, r.line) for r in records] == [("clips/violin.mp4", 2), ("clips/piano.mp4", 6)]
    assert [(s.path, s.reason, s.line) for s in skipped] == [
        ("../x.mp4", "path outside the dataset directory", 3),
        ("/etc/hostname", "path outside the dataset directory", 4),
        ("clips/sub/../violin.mp4", "duplicate of line 2", 5),
        ("clips/piano.mp4", "duplicate of line 6", 7),
        ("clips/gone.mp4", "file not found", 8),
    ]


# --- engine caches -----------------------------------------------------------------------------------


def test_the_bundled_models_engines_go_to_the_user_cache(runtime_bundle: Path, tmp_path: Path, monkeypatch) -> None:
    from streamrec.core.assets import DEFAULT_BUNDLE
    from streamrec.core.bundle import Bundle
    from streamrec.engines.cache import EngineCache

    monkeypatch.delenv("STREAMREC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    bundled = EngineCache.for_bundle(Bundle.load(DEFAULT_BUNDLE)).root
    assert bundled.is_relative_to(tmp_path / "xdg" / "streamrec" / "engines")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert EngineCache.for_bundle(Bundle.load(DEFAULT_BUNDLE)).root.is_relative_to(
        tmp_path / "home" / ".cache" / "streamrec" / "engines"
    )
    # A user's own writable bundle keeps its engines beside it.
    assert EngineCache.for_bundle(Bundle.load(runtime_bundle)).root == runtime_bundle / "engines"


def test_package_data_globs_leave_engine_caches_out_of_the_wheel(tmp_path: Path) -> None:
    """setuptools' own rules (build_py.find_data_files): package-data globs expanded recursively, then
    exclude-package-data matched with fnmatch; applied to a package tree holding an engine cache."""
    import fnmatch
    import glob
    import tomllib

    setuptools = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    package = tmp_path / "streamrec"
    shipped = ["assets/example.mp4", "assets/model/manifest.json", "assets/model/reports/a.json", "web/index.html"]
    cached = ["assets/model/engines/onnx/audio-fp32-0.onnx", "assets/model/engines/onnxruntime/.audio.lock"]
    for name in shipped + cached:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_bytes(b"x")
    found = {
        path
        for pattern in setuptools["package-data"]["streamrec"]
        for path in glob.glob(str(package / pattern), recursive=True)
        if os.path.isfile(path)
    }
    for pattern in setuptools.get("exclude-package-data", {}).get("streamrec", []):
        found -= set(fnmatch.filter(found, str(package / pattern)))
    assert sorted(os.path.relpath(p, package) for p in found) == sorted(shipped)
