"""Wires the stages of the live runtime; the only module with threads and an asyncio loop.

    source threads --emit--> AudioRing / FrameRing per stream
    inference thread: windowing -> Recognizer (batched over streams) -> Smoother -> events
    worker threads (runtime/workers.py): the frame network on new frames, the tagger on windows updates left
    events -> JSON lines, terminal view, websocket server (its own thread and event loop)

Real-time streams never wait: a ring that overflows loses its oldest data and a lagging stream
skips to its newest window. Streams decoded as fast as possible wait for inference instead
(back-pressure in `emit`), so every window of a file is evaluated. Ctrl-C or SIGTERM stops
everything within about a second: sources stop, files are flushed, clients get a close frame.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from threading import Thread
from typing import Any

import numpy as np
import torch

from streamrec.core.bundle import Bundle
from streamrec.core.errors import UserError
from streamrec.core.networks import NetworkInfo, Networks
from streamrec.core.scores import FusionRule
from streamrec.engines import load_networks
from streamrec.engines.base import ReportsStatus
from streamrec.runtime import workers
from streamrec.runtime.batching import collect_due, fill_batch
from streamrec.runtime.broadcast import DEFAULT_HOST, BroadcastOptions, WebsocketSink
from streamrec.runtime.explain import LiveExplainer
from streamrec.runtime.options import CustomSource, RuntimeOptions
from streamrec.runtime.recognizer import Recognizer, Request
from streamrec.runtime.sinks import JsonlSink, QueuedSink, Sink, SinkError
from streamrec.runtime.smoothing import SmoothingOptions
from streamrec.runtime.sources import (
    CaptureFormat,
    Emit,
    Source,
    SourceSpec,
    assign_stream_ids,
    open_source,
)
from streamrec.runtime.streams import RunSummary, StreamState
from streamrec.runtime.types import (
    TERMINAL_STATES,
    AudioChunk,
    Frame,
    Recognition,
    SourceInfo,
    SourceItem,
    StateChange,
    hello_event,
    prediction_event,
    status_event,
)
from streamrec.runtime.view import TerminalView
from streamrec.runtime.windowing import WindowSpec

log = logging.getLogger(__name__)

FRAME_LAG = 3  # frames a non-real-time stream without audio may run ahead of inference
SOURCE_JOIN_SECONDS = 1.0  # how long shutdown waits for source threads (a blocked network read is abandoned)
IDLE_WAIT = 0.05  # seconds the inference loop sleeps when nothing is due


class Runtime:
    """Runs sources through the networks to the sinks until every stream ends or stop() is called.

    networks: give them to share loaded networks between runs (default: loaded from options.bundle).
    sinks: extra event receivers (see sinks.CallbackSink). `ready` is set once the websocket server
    listens (`ws_port` then holds its port) and the sources are about to start. observer: called on the
    inference thread with (stream id, media time, Recognition) of every update, before its smoothing: what the
    networks said, for re-smoothing it under other settings (`streamrec tune`).
    """

    def __init__(
        self,
        sources: Sequence[SourceSpec | CustomSource],
        options: RuntimeOptions | None = None,
        sinks: Sequence[Sink] = (),
        networks: Networks | None = None,
        observer: Callable[[str, float, Recognition], None] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("the runtime needs at least one source")
        self.specs = list(sources)
        self.options = options or RuntimeOptions()
        self._extra_sinks = list(sinks)
        self._networks = networks
        self._observer = observer
        self._stop = threading.Event()
        self._stopped_by: str | None = None
        self._wake = threading.Event()  # new data for the inference loop
        self._frame_wake = threading.Event()  # new frames for the frame loop
        self._tagger_wake = threading.Event()  # windows left for the tagger
        self._sink_lock = threading.Lock()
        self._sinks: list[Sink] = []
        self._ws: WebsocketSink | None = None
        self._view: TerminalView | None = None
        self._streams: list[StreamState] = []
        self._turn = 0  # the stream _collect starts with
        self._failure: BaseException | None = None
        # Set by run(), from the networks:
        self._info: NetworkInfo
        self._classes: tuple[str, ...]
        self._recognizer: Recognizer
        self._explainer: LiveExplainer | None = None
        self._smoothing = SmoothingOptions()  # run() takes the options', else the bundle's tuned ones
        self.ready = threading.Event()
        self.ws_port: int | None = None
        self.web_port: int | None = None

    def stop(self, reason: str = "stop()") -> None:
        """Asks every stage to stop (thread-safe; returns at once, run() returns shortly after)."""
        if not self._stop.is_set():
            self._stopped_by = reason
            self._stop.set()
            self._wake.set()
            for stream in self._streams:
                with stream.cond:
                    stream.cond.notify_all()

    # --- setup -------------------------------------------------------------------------------

    def _build_streams(self, info: NetworkInfo) -> list[StreamState]:
        fmt = CaptureFormat(info.sample_rate, info.frames, WindowSpec.for_updates(info, self.options.hop_seconds))
        specs = [s for s in self.specs if isinstance(s, SourceSpec)]
        ids = iter(assign_stream_ids(specs))
        # Real-time inputs keep their 1 fps frames at different phases of the second (media.FrameSampler),
        # so the frame network gets them spread in time, not all at once; others keep phase 0, as eval does.
        live, phases = sum(s.is_realtime for s in specs), itertools.count()
        grouped: dict[str, list[tuple[Source, bool, float]]] = {}  # id -> (source, realtime, seconds between items)
        for item in self.specs:
            if isinstance(item, CustomSource):
                grouped.setdefault(item.stream_id, []).append((item.source, item.realtime, 0.0))
            else:
                phase = next(phases) / live / info.frames.fps if item.is_realtime else 0.0
                source = open_source(item, dataclasses.replace(fmt, frame_phase=phase), self.options.duration)
                # A camera sends only the frames it keeps: at a low rate it is quiet between them.
                gap = 1.0 / (item.fps or info.frames.fps) if item.kind == "camera" else 0.0
                grouped.setdefault(next(ids), []).append((source, item.is_realtime, gap))
        streams = []
        for stream_id, inputs in grouped.items():
            for source, _, _ in inputs:
                source.prepare()  # a missing device or file fails here, before anything starts
            realtime = any(r for _, r, _ in inputs)
            stream = StreamState(
                stream_id,
                [s for s, _, _ in inputs],
                realtime,
                info,
                self.options.hop_seconds,
                self.options.lag_seconds,
                self._smoothing,
                self.options.stall_seconds,
            )
            stream.stall_after = max(self.options.stall_seconds, 2.5 * max(gap for _, _, gap in inputs))
            streams.append(stream)
        return streams

    def _hello(self) -> dict[str, Any]:
        return hello_event(self._classes, [(s.id, s.description) for s in self._streams])

    def _open_sinks(self) -> None:
        o = self.options
        if o.ws is not None or o.web is not None:
            host, port = o.ws or (DEFAULT_HOST, None)
            ws_options = BroadcastOptions(
                host or DEFAULT_HOST,
                port,
                o.token,
                o.client_queue,
                web=o.web,
                allow_origins=o.allow_origins,
                certfile=o.certfile,
                keyfile=o.keyfile,
            )
            self._ws = WebsocketSink(ws_options, self._hello)
            self._ws.start()
            self._sinks.append(self._ws)  # first to get each event, and first closed: clients hear the end
            self.ws_port, self.web_port = self._ws.port, self._ws.web_port
            if self._ws.broadcaster.web_url:
                log.info("live view: %s", self._ws.broadcaster.web_url)
        if o.jsonl is not None:
            # Opened (truncated) only once the listeners started: a run that cannot start keeps the old file.
            # Its own thread and queue: a slow reader of the file or pipe never holds up inference.
            self._sinks.append(QueuedSink(JsonlSink(o.jsonl), self._fail))
        if o.view:
            self._view = TerminalView([(s.id, s.description) for s in self._streams])
            self._sinks.append(self._view)
        self._sinks += self._extra_sinks

    def _fail(self, error: BaseException) -> None:
        """A sink lost events (its one-line SinkError) or a thread failed: the run stops and fails with the first."""
        if self._failure is None:
            self._failure = error
        self.stop("failure")

    def _close_sinks(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing %s failed", type(sink).__name__)

    def _publish(self, event: dict[str, Any]) -> None:
        with self._sink_lock:
            for sink in list(self._sinks):
                try:
                    sink.send(event)
                except Exception as e:
                    log.debug("%s failed on an event", type(sink).__name__, exc_info=True)
                    self._sinks.remove(sink)
                    self._fail(e if isinstance(e, SinkError) else SinkError(f"{type(sink).__name__}: {e}"))

    # --- sources ----------------------------------------------------------------------------

    def _emitter(self, stream: StreamState, index: int) -> Emit:
        has_audio_network = self._info.has_audio

        def emit(item: SourceItem) -> None:
            # The inference loop is woken only when this item may make an update due: with many real-time
            # streams a wake per audio packet had it scan every stream about 1,400 times a second.
            update_due = True
            if isinstance(item, AudioChunk):
                if not has_audio_network:
                    return  # nothing would read it: waiting for inference to take it would stall the source
                self._backpressure_audio(stream, len(item.samples))
                stream.audio.write(item)
                # Read without the stream's lock: a stale next_end only wakes the loop once too often.
                update_due = stream.driver != "audio" or stream.audio.total_written >= stream.windower.next_end
            elif isinstance(item, Frame):
                self._backpressure_frames(stream)
                stream.frames.write(item)
                self._frame_wake.set()
                if self._view is not None:
                    self._view.note_frame(stream.id, item.capture_time)
                update_due = stream.driver != "audio"  # frames drive only the updates of streams without audio
            elif isinstance(item, SourceInfo):
                stream.infos[index] = item
                stream.decide_driver(has_audio_network)
            elif isinstance(item, StateChange):
                self._source_state(stream, index, item)
                return
            stream.last_input = time.monotonic()
            if stream.state == "stalled":
                stream.state = "started"
                self._publish(status_event(stream.id, "started", "data flows again"))
            if update_due:
                self._wake_for(stream)

        return emit

    def _wake_for(self, stream: StreamState) -> None:
        """Wakes the inference loop to look at this stream (marked first, so the loop cannot miss it)."""
        stream.pending = True
        self._wake.set()

    def _backpressure_audio(self, stream: StreamState, n: int) -> None:
        if stream.realtime:
            return  # live data never waits: the ring keeps the newest
        with stream.cond:
            while not self._stop.is_set():
                ahead = stream.audio.total_written + n - stream.oldest_needed
                if ahead <= stream.audio.capacity or stream.audio.total_written <= stream.oldest_needed:
                    return
                stream.cond.wait(0.1)

    def _backpressure_frames(self, stream: StreamState) -> None:
        if stream.realtime or stream.driver != "video":
            return  # with audio, the audio's back-pressure and the source's ordering bound the frames
        with stream.cond:
            while not self._stop.is_set() and stream.frames.total_written - stream.frames_done >= FRAME_LAG:
                stream.cond.wait(0.1)

    def _source_state(self, stream: StreamState, index: int, change: StateChange) -> None:
        if change.state in TERMINAL_STATES:
            # Published by the inference loop once this stream's remaining windows are evaluated.
            stream.ends.append(change)
            if change.state == "error" and len(stream.running) > 1:  # the stream goes on with its other inputs
                self._publish(status_event(stream.id, "error", f"{stream.sources[index].description}: {change.detail}"))
            return
        if change.state == "reconnecting":  # issue #20: nothing from before an outage mixes with what follows it
            stream.restart()
        stream.state = change.state
        self._publish(status_event(stream.id, change.state, change.detail))

    def _run_source(self, stream: StreamState, index: int) -> None:
        source = stream.sources[index]
        try:
            source.run(self._emitter(stream, index), self._stop)
        except Exception as e:  # Source.run should not raise; if it does, its stream ends in error
            log.exception("source %s failed", source.description)
            stream.ends.append(StateChange("error", f"{type(e).__name__}: {e}"))
        finally:
            stream.running.discard(index)
            stream.infos.setdefault(index, SourceInfo(audio=False, video=False))
            stream.decide_driver(self._info.has_audio)
            self._wake_for(stream)

    # --- inference --------------------------------------------------------------------------

    def _collect(self, limit: int) -> list[tuple[StreamState, Request]]:
        """The updates due on all streams, at most `limit`, from another first stream each time."""
        self._turn = (self._turn + 1) % len(self._streams)
        return collect_due(self._streams, self._turn, limit, self._info.k_frames)

    def _evaluate(self, due: list[tuple[StreamState, Request]]) -> None:
        results = self._recognizer([request for _, request in due])
        for (stream, request), result in zip(due, results):
            t, captured = request.times()
            if stream.take_restart():  # issue #20: smoothing starts over after a reconnection, as windows do
                stream.smoother.reset()
            if self._observer is not None:
                self._observer(stream.id, t, result)
            smoothed = stream.smoother.follow(t, result)
            explanation = None
            if self._explainer is not None and request.frames:
                newest = request.frames[-1]
                top = self._classes[int(np.argmax(result.fused))]
                explanation = self._explainer.explain(stream.id, newest.key, newest.image, top)
            wall = time.time()
            latency = (wall - captured) * 1000.0
            stream.latencies.append(latency)
            self._publish(
                prediction_event(
                    stream.id, stream.seq, t, wall, self._classes, result, smoothed.active, latency, explanation
                )
            )
            stream.seq += 1
        self._tagger_wake.set()  # the updates left their windows for the tagger (if it runs)
        for stream in {id(s): s for s, _ in due}.values():
            with stream.cond:
                stream.cond.notify_all()

    def _prime(self, limit: int) -> int:
        """Embeds up to `limit` frames not seen yet, oldest first; returns how many."""
        k = self._info.k_frames
        return self._recognizer.prime({s.id: s.frames.latest(k) for s in self._streams if not s.finished}, limit)

    def _worker(self, name: str, step: Callable[[], int], wake: threading.Event, lowest: bool = False) -> Thread:
        """A started worker thread (streamrec.runtime.workers): step() until the run stops; a failure stops it."""
        thread = Thread(target=workers.work, args=(name, step, wake, self._stop, self._fail, lowest), name=name)
        thread.daemon = True
        thread.start()
        return thread

    def _finish(self) -> bool:
        """Publishes the final state of streams whose sources are done and windows evaluated; True when all are."""
        for stream in self._streams:
            if not stream.finished and not stream.running and self._drained(stream):
                stream.finished = True
                final = stream.final_state()
                stream.state = final.state
                self._publish(status_event(stream.id, final.state, final.detail))
        return all(s.finished for s in self._streams)

    def _drained(self, stream: StreamState) -> bool:
        """Nothing left to evaluate (asked once the stream's sources stopped writing)."""
        if stream.driver == "audio":
            total = stream.audio.total_written
            return total < stream.windower.next_end and not stream.windower.has_tail(total)
        return stream.frames.total_written <= stream.frame_windower.done

    def _server_status(self, state: str, detail: str) -> None:
        """The inference server went away ("reconnecting") or came back ("started"): a remote backend's
        state (streamrec.engines.triton_client), reported on every stream still running."""
        for stream in self._streams:
            if not stream.finished:
                self._publish(status_event(stream.id, state, detail))

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for stream in self._streams:
            quiet = now - stream.last_input > stream.stall_after
            if stream.realtime and stream.running and stream.state == "started" and quiet:
                stream.state = "stalled"
                self._publish(status_event(stream.id, "stalled", f"no data for {stream.stall_after:g} s"))

    def _infer_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                due = self._collect(self.options.max_batch)
                if due and self.options.batch_wait > 0:
                    due = fill_batch(due, self._collect, self._streams, self._info.sample_rate, *self._batching)
                if due:
                    self._evaluate(due)
                    continue
                if self._finish():
                    return
                self._check_stalls()
                self._wake.wait(IDLE_WAIT)
        except BaseException as e:  # an internal failure stops the run; run() reports it
            log.exception("the inference loop failed")
            self._fail(e)

    # --- run --------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Blocks until every stream ended or stop() was called; sinks are closed on return."""
        if self.ready.is_set() or self._streams:
            raise RuntimeError("a Runtime runs once; make a new one to run again")

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(self.options.threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(torch_threads)

    def _run(self) -> RunSummary:
        o = self.options
        networks = self._networks or load_networks(o.bundle, o.backend, o.threads, triton_url=o.triton_url)
        if isinstance(networks, ReportsStatus):
            networks.set_status_listener(self._server_status)
        self._info = networks.info
        self._classes = self._info.classes
        bundle = Bundle.load(o.bundle)  # its fusion rule and smoothing: networks given must come from it
        if bundle.classes != self._classes:
            raise ValueError(f"the networks' classes differ from those of the bundle {bundle.root}: pass its path")
        rule = o.fusion_rule or FusionRule.from_manifest(bundle.manifest, self._info.has_fusion)
        self._recognizer = Recognizer(networks, rule)
        self._batching = (o.max_batch, o.batch_wait, self._wake, self._stop)  # fill_batch's bounds
        if self.options.explain and self._info.has_video:
            self._explainer = LiveExplainer.from_bundle(self.options.bundle)
        self._smoothing = self.options.smoothing or SmoothingOptions.of_bundle(bundle)
        self._streams = self._build_streams(self._info)
        threads: list[threading.Thread] = []
        inference: threading.Thread | None = None
        try:
            self._open_sinks()
            if self._view is not None:
                self._view.start()
            self.ready.set()
            self._wait_for_clients()
            inference = threading.Thread(target=self._infer_loop, name="inference", daemon=True)
            inference.start()
            workers = self.options.frame_workers or os.cpu_count() or 1
            for n in range(workers if self._info.has_video else 0):
                prime = functools.partial(self._prime, self.options.frame_batch)
                threads.append(self._worker(f"frames-{n}", prime, self._frame_wake))
            if self._recognizer.uses_tagger:
                threads.append(self._worker("tagger", self._recognizer.tag, self._tagger_wake, lowest=True))
            for stream in self._streams:
                for index in range(len(stream.sources)):
                    thread = threading.Thread(
                        target=self._run_source, args=(stream, index), name=f"source-{stream.id}-{index}", daemon=True
                    )
                    thread.start()
                    threads.append(thread)
            while inference.is_alive():
                inference.join(timeout=0.1)  # short joins keep the main thread responsive to signals
        finally:
            self.stop(self._stopped_by or "end")
            deadline = time.monotonic() + SOURCE_JOIN_SECONDS
            if inference is not None:
                inference.join(timeout=SOURCE_JOIN_SECONDS)
            for thread in threads:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            for stream in self._streams:
                if not stream.finished:
                    stream.finished = True
                    self._publish(status_event(stream.id, "ended", "stopped"))
                    stream.state = "ended"
            if isinstance(networks, ReportsStatus):
                networks.set_status_listener(None)  # networks shared between runs must not call this one
            self._close_sinks()
        if isinstance(self._failure, UserError):
            raise self._failure  # a sink that lost events: its one-line reason
        if self._failure is not None:
            raise RuntimeError(f"the live runtime failed: {self._failure}") from self._failure
        return self._summary()

    def _wait_for_clients(self) -> None:
        if not self.options.wait_clients or self._ws is None:
            return
        log.info("waiting for %d websocket client(s) on port %s", self.options.wait_clients, self.ws_port)
        while not self._stop.is_set() and self._ws.client_count() < self.options.wait_clients:
            self._stop.wait(0.02)

    def _summary(self) -> RunSummary:
        streams = {stream.id: stream.summary() for stream in self._streams}
        stopped = self._stopped_by if self._stopped_by not in (None, "end") else None
        code = 0
        if any(s.state == "error" for s in streams.values()):
            code = 2
        if stopped in ("SIGINT", "SIGTERM"):
            code = 128 + int(getattr(signal, stopped))
        return RunSummary(streams, stopped, code, self._recognizer.batches.summary())
