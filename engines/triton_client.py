"""The "triton" backend: a bundle's networks served by a Triton Inference Server, reached over gRPC.

    networks = load_networks(bundle, "triton", triton_url="grpc://gpu-host:8001")   # as every backend

The server holds the models `streamrec engines triton OUT` wrote for the same bundle (streamrec.engines.triton_repo);
the client keeps the log-mel front end and everything after the networks, exactly as for the in-process engines
(streamrec.engines.networks.EngineNetworks runs both: a TritonEngine is an Engine whose `infer` is a gRPC call).
At start the client waits for the server and its models (TritonOptions.connect_seconds), then checks that every
served model has the graph's inputs and outputs and, where its config states one, the bundle's weights hash.

While running, a request that fails because the server is unreachable, restarting or overloaded (gRPC
UNAVAILABLE, DEADLINE_EXCEEDED, NOT_FOUND for a model still loading, RESOURCE_EXHAUSTED) is sent again with
exponential back-off; the first failure reports "reconnecting" and the first success after it "started" to the
status listener (the runtime turns them into `status` events of every stream). Any other error is raised at once.
Calls block while the server is away: a real-time stream then skips to its newest window, a file waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from streamrec.core.bundle import KINDS, Bundle
from streamrec.core.graphs import graph_metadata, graph_spec
from streamrec.engines.base import EngineBase, EngineError, StatusListener, check_inputs, log_io
from streamrec.engines.triton_repo import TRITON_DTYPES, WIRE_DTYPES, model_name

# tritonclient is imported where it is used: the "triton" extra is optional.

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PORT = 8001  # Triton's gRPC port
# gRPC status codes after which the same request is worth sending again (the server away, restarting or busy).
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND", "RESOURCE_EXHAUSTED")


def parse_triton_url(url: str | None) -> str:
    """grpc://HOST[:PORT] (or HOST[:PORT]) -> "HOST:PORT", the form tritonclient takes. Raises EngineError."""
    if not url:
        raise EngineError("the triton backend needs the server's address: --triton-url grpc://HOST:8001")
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "grpc", url
    if scheme != "grpc":
        raise EngineError(f"--triton-url {url!r}: only grpc:// is supported (Triton's gRPC port, usually 8001)")
    rest = rest.rstrip("/")
    if rest.startswith("["):  # [IPv6]:PORT
        host, _, port = rest.partition("]")
        host, port = host + "]", port.removeprefix(":")
    else:
        host, _, port = rest.partition(":")
    port = port or str(DEFAULT_PORT)
    if host in ("", "[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise EngineError(f"--triton-url {url!r}: expected grpc://HOST:PORT")
    return f"{host}:{port}"


@dataclass(frozen=True)
class TritonOptions:
    url: str  # grpc://HOST:PORT
    timeout_seconds: float = 10.0  # one request, sent again after it
    connect_seconds: float = 60.0  # at start: how long to wait for the server and its models
    give_up_seconds: float | None = None  # while running: None = retry until the server returns
    backoff_seconds: tuple[float, float] = (0.1, 2.0)  # first and longest wait between attempts

    def __post_init__(self) -> None:
        parse_triton_url(self.url)
        low, high = self.backoff_seconds
        if self.timeout_seconds <= 0 or self.connect_seconds < 0 or not 0 < low <= high:
            raise EngineError("timeouts must be positive and the back-off grow from its first to its longest wait")


def transient(error: Exception) -> bool:
    """Whether a tritonclient error is worth retrying (see TRANSIENT)."""
    status = getattr(error, "status", lambda: None)() or ""
    return any(status.endswith(code) for code in TRANSIENT)


class TritonConnection:
    """One gRPC client shared by the models of a bundle, with the retries and the server's up/down state."""

    def __init__(self, options: TritonOptions) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        self.options = options
        self.url = options.url
        self._error_type = InferenceServerException
        max_message = 2**31 - 1  # a batch of 16 frames is 9.6 MB, over gRPC's 4 MB default
        # Short reconnect back-off: gRPC's default grows to 2 minutes, which would hide a restarted server.
        channel_args = [
            ("grpc.max_send_message_length", max_message),
            ("grpc.max_receive_message_length", max_message),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(options.backoff_seconds[1] * 1000)),
        ]
        self.client = grpcclient.InferenceServerClient(parse_triton_url(options.url), channel_args=channel_args)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._listener: StatusListener | None = None
        self._closed = threading.Event()

    def set_status_listener(self, listener: StatusListener | None) -> None:
        self._listener = listener

    def call(self, what: str, request: Callable[[Any], T]) -> T:
        """request(client), sent again with back-off while the failure is transient (see the module docstring)."""
        low, high = self.options.backoff_seconds
        delay, first_failure = low, None
        while True:
            try:
                result = request(self.client)
            except self._error_type as e:
                if not transient(e):
                    raise RuntimeError(f"Triton at {self.url}: {what} failed: {e}") from e
                now = time.monotonic()
                first_failure = first_failure or now
                self._went_down(e)
                give_up = self.options.give_up_seconds
                if give_up is not None and now - first_failure > give_up:
                    raise RuntimeError(f"Triton at {self.url}: {what} failed for {give_up:g} s: {e}") from e
                if self._closed.wait(delay):
                    raise RuntimeError(f"Triton at {self.url}: closed while retrying {what}") from e
                delay = min(2 * delay, high)
                continue
            if self._down_since is not None:
                self._came_back()
            return result

    # Reported under the lock: the audio and frame threads fail and recover concurrently, and the events must
    # alternate (reconnecting, started, ...) in the order the state changed.
    def _went_down(self, error: Exception) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            detail = f"inference server {self.url} unreachable ({str(error).splitlines()[0][:160]}); retrying"
            log.warning("%s", detail)
            self._report("reconnecting", detail)

    def _came_back(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            detail = f"inference server {self.url} is back after {time.monotonic() - self._down_since:.1f} s"
            self._down_since = None
            log.info("%s", detail)
            self._report("started", detail)

    def _report(self, state: str, detail: str) -> None:
        if self._listener is not None:
            self._listener(state, detail)

    def wait_ready(self, models: list[str]) -> None:
        """Blocks until the server is live and every model ready; EngineError after options.connect_seconds."""
        deadline = time.monotonic() + self.options.connect_seconds
        delay, last = self.options.backoff_seconds[0], "no answer"
        while True:
            try:
                timeout = self.options.timeout_seconds
                if self.client.is_server_live(client_timeout=timeout):
                    missing = [m for m in models if not self.client.is_model_ready(m, client_timeout=timeout)]
                    if not missing:
                        return
                    last = f"models not ready: {', '.join(missing)}"
            except self._error_type as e:
                last = str(e).splitlines()[0][:200]
            if time.monotonic() + delay > deadline:
                raise EngineError(
                    f"Triton at {self.url} is not ready after {self.options.connect_seconds:g} s ({last}); start it "
                    "with the repository of `streamrec engines triton` for this bundle"
                )
            time.sleep(delay)
            delay = min(2 * delay, self.options.backoff_seconds[1])

    def close(self) -> None:
        """Idempotent: the engines sharing the connection each close it."""
        if not self._closed.is_set():
            self._closed.set()
            self.client.close()


def check_served(config: Mapping[str, Any], bundle: Bundle, kind: str) -> int:
    """Compares a served model's config (get_model_config as JSON) with the bundle's graph; returns its
    max_batch_size. Raises EngineError naming the first difference."""
    spec = graph_spec(bundle, kind)
    name = model_name(kind)
    redo = "write the repository again with `streamrec engines triton` for this bundle"
    max_batch = int(config.get("max_batch_size", 0))
    if max_batch < 1:
        raise EngineError(f"Triton model {name} does not batch (max_batch_size 0); {redo}")
    for side, expected in (("input", spec.inputs), ("output", spec.outputs)):
        served = {t["name"]: t for t in config.get(side, [])}
        for s in expected:
            t = served.get(s.name)
            dims = tuple(int(d) for d in t.get("dims", [])) if t else None
            if t is None or dims != tuple(s.shape[1:]) or t.get("data_type") != TRITON_DTYPES[s.dtype]:
                got = f"{t.get('data_type')} {dims}" if t else "missing"
                raise EngineError(f"Triton model {name}: {side} {s.name} is {got} there, the bundle needs "
                                  f"{TRITON_DTYPES[s.dtype]} {tuple(s.shape[1:])}; {redo}")  # fmt: skip
    weights = config.get("parameters", {}).get("weights_sha256", {}).get("string_value")
    if weights is None:
        log.warning("Triton model %s states no weights hash (not a streamrec repository?): not checked", name)
    elif weights != bundle.network(kind)["sha256"]:
        raise EngineError(f"Triton model {name} serves other weights than the bundle {bundle.root}; {redo}")
    return max_batch


class TritonEngine(EngineBase):
    """One network of a bundle served by Triton, behind the Engine protocol."""

    backend = "triton"

    def __init__(self, connection: TritonConnection, bundle: Bundle, kind: str) -> None:
        spec = graph_spec(bundle, kind)
        self.kind, self.model = kind, model_name(kind)
        self._inputs, self._outputs = spec.inputs, spec.outputs
        self._connection = connection
        timeout = connection.options.timeout_seconds
        config = connection.call(
            f"{self.model} config",
            lambda c: c.get_model_config(self.model, as_json=True, client_timeout=timeout)["config"],
        )
        self.max_batch = check_served(config, bundle, kind)
        self.metadata: dict = {
            **graph_metadata(bundle, kind),
            "precision": "fp32",
            "path": f"{connection.url}/{self.model}",
        }
        log_io(
            log,
            self.backend,
            kind,
            self._inputs,
            self._outputs,
            f"{connection.url} {self.model}, batch up to {self.max_batch}",
        )

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.kind, self._inputs, inputs)
        count = len(next(iter(inputs.values())))
        parts = [
            self._request({k: v[i : i + self.max_batch] for k, v in inputs.items()})
            for i in range(0, count, self.max_batch)
        ]
        return {s.name: np.concatenate([p[s.name] for p in parts]) for s in self._outputs}

    def _request(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tritonclient.grpc as grpcclient

        feeds = []
        for s in self._inputs:
            array = np.ascontiguousarray(inputs[s.name], dtype=s.dtype)
            feed = grpcclient.InferInput(s.name, list(array.shape), WIRE_DTYPES[s.dtype])
            feed.set_data_from_numpy(array)
            feeds.append(feed)
        wanted = [grpcclient.InferRequestedOutput(s.name) for s in self._outputs]
        timeout = self._connection.options.timeout_seconds
        result = self._connection.call(
            f"{self.model} inference",
            lambda c: c.infer(self.model, feeds, outputs=wanted, client_timeout=timeout),
        )
        return {s.name: result.as_numpy(s.name) for s in self._outputs}

    def set_status_listener(self, listener: StatusListener | None) -> None:
        self._connection.set_status_listener(listener)  # the engines of a bundle share one connection

    def close(self) -> None:
        self._connection.close()


def triton_engines(bundle: Bundle, options: TritonOptions | str | None) -> dict[str, TritonEngine]:
    """The bundle's networks on the Triton server at options.url (or the URL given), once it and its models are
    ready: EngineNetworks(bundle, "triton", engines=...) runs them as any engines."""
    if not isinstance(options, TritonOptions):
        options = TritonOptions(options or "")  # an empty URL: EngineError saying what to give
    try:
        import tritonclient.grpc  # noqa: F401
    except ImportError as e:
        raise EngineError(f"the triton backend needs tritonclient: pip install -e '.[triton]' ({e})") from e
    connection = TritonConnection(options)
    kinds = [k for k in KINDS if bundle.has(k)]
    try:
        connection.wait_ready([model_name(k) for k in kinds])
        return {k: TritonEngine(connection, bundle, k) for k in kinds}
    except BaseException:
        connection.close()
        raise
