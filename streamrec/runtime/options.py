"""How a Runtime runs (RuntimeOptions) and what it can be given besides the inputs it opens itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamrec.core.scores import FusionRule
from streamrec.runtime.smoothing import SmoothingOptions
from streamrec.runtime.sources import Source, SourceSpec
from streamrec.runtime.windowing import DEFAULT_HOP_SECONDS


@dataclass(frozen=True)
class RuntimeOptions:
    bundle: Path | None = None  # model bundle; None = the bundled model
    backend: str = "torch"
    triton_url: str | None = None  # backend "triton": the server, grpc://HOST:PORT
    # Intra-op threads per network, ONNX Runtime's and torch's (torch's setting is process-wide: set for
    # the run, restored after). One: the frame and audio networks already run in parallel threads; 2 + 2
    # threads on 2 cores cost 25% more CPU for the same work, and the small torch ops of every update
    # (front end, frame conversion) took 6x longer with a second OpenMP thread (measured).
    threads: int = 1
    hop_seconds: float = DEFAULT_HOP_SECONDS  # seconds between audio updates
    ws: tuple[str, int] | None = None  # websocket (host, port); port 0 = any free port
    web: tuple[str, int] | None = None  # browser live view (host, port), its websocket at /ws; port 0 = any
    explain: bool = False  # Grad-CAM of the newest frame for the top class in each prediction event
    token: str | None = None  # required from websocket clients when set
    allow_origins: tuple[str, ...] = ()  # browser origins let in besides the web view's own ("*": any)
    certfile: Path | None = None  # TLS for the websocket server and the web view (wss://, https://)...
    keyfile: Path | None = None  # ...with this key, when it is not in certfile
    jsonl: Path | None = None
    view: bool = False
    duration: float | None = None  # seconds of media per source, then it ends
    smoothing: SmoothingOptions | None = None  # None: the bundle's tuned settings (`streamrec tune`), else defaults
    fusion_rule: FusionRule | None = None  # None: the bundle's (`streamrec tune` chooses it; core/scores.py)
    client_queue: int = 64  # events per websocket client before its oldest are dropped
    wait_clients: int = 0  # start the sources only once this many websocket clients are connected
    # Cross-stream batching (runtime/batching.py): at most max_batch updates (or frames) per network call;
    # a batch that is not full waits at most batch_wait seconds for windows other real-time streams are
    # about to complete (never when none is: one stream alone adds no latency).
    max_batch: int = 16
    batch_wait: float = 0.005
    # Threads running the frame network, at most frame_batch frames per call, oldest first (None: one per
    # core; each call runs on `threads` intra-op threads). Small frame batches: an update that needs a frame
    # waits for the whole call embedding it, and batching convolutions gains little on a CPU (16 ms a frame
    # at batch 1, 13-19 ms at batch 16, measured). The inference thread runs the small audio and fusion calls.
    frame_workers: int | None = None
    frame_batch: int = 4
    stall_seconds: float = 3.0  # a real-time stream without data this long is reported stalled
    lag_seconds: float = 2.0  # seconds of audio a non-real-time source may run ahead of inference

    def __post_init__(self) -> None:
        if self.hop_seconds <= 0:
            raise ValueError(f"the hop must be positive seconds, got {self.hop_seconds}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"the duration must be positive seconds, got {self.duration}")
        if self.max_batch < 1 or self.threads < 1 or self.wait_clients < 0:
            raise ValueError("max_batch and threads must be >= 1, wait_clients >= 0")
        if not 0 <= self.batch_wait <= 1 or (self.frame_workers is not None and self.frame_workers < 1):
            raise ValueError("batch_wait must lie in [0, 1] seconds and frame_workers be >= 1")
        if self.frame_batch < 1:
            raise ValueError("frame_batch must be >= 1")
        if self.stall_seconds <= 0 or self.lag_seconds <= 0:
            raise ValueError("stall_seconds and lag_seconds must be > 0")
        if self.wait_clients and self.ws is None and self.web is None:
            raise ValueError("wait_clients needs the websocket server (ws) or the web view (web)")


@dataclass(frozen=True)
class CustomSource:
    """An input the runtime does not open itself: any object following the sources.Source protocol
    (for example one that hands over audio an application already has). realtime: never wait for
    inference (the ring keeps the newest data); False: wait, so that every window is evaluated."""

    stream_id: str
    source: Source
    realtime: bool = True

    def __post_init__(self) -> None:
        SourceSpec("file", "-", self.stream_id)  # the same rule for stream ids as every other input
