"""Events through an MQTT broker (`--mqtt mqtt://HOST:PORT/PREFIX`): the websocket's JSON on per-stream topics.

Every `prediction` and `status` event is published with QoS 1 on `PREFIX/STREAM/TYPE` (status events
retained, so a consumer that subscribes later learns each stream's state). paho-mqtt's network thread
connects and reconnects with exponential back-off; this module's own thread (`mqtt`) moves events from
a bounded buffer to paho only while the broker is connected, at most `window` awaiting the broker's
PUBACK. While the broker is unreachable the buffer keeps the newest `buffer` events and drops the oldest,
counted per stream; once the broker is back, each stream that lost events gets a `status` event repeating
its state with `dropped` (the count) before its remaining events, and the total is logged at exit.

Order: paho resends unacknowledged messages itself after a reconnection; nothing new is published until
those are acknowledged, so a stream's events reach the broker in the order they were emitted. Delivery is
at least once (a message the broker took just before it went away may arrive twice; `seq` tells).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_PREFIX = "streamrec"
QOS = 1  # at least once: the broker acknowledges every event, so none is lost while it is up


@dataclass(frozen=True)
class MqttOptions:
    host: str
    port: int = DEFAULT_PORT
    prefix: str = DEFAULT_PREFIX  # topics are PREFIX/STREAM/TYPE
    username: str | None = None
    password: str | None = None
    # Events held while the broker is unreachable; beyond, the oldest are dropped. 10000 events of ~1.5 kB:
    # 15 MB, 50 s of 100 streams at 2 updates/s.
    buffer: int = 10_000
    window: int = 20  # messages published but not yet acknowledged (paho's max in flight)
    min_delay: float = 0.5  # seconds before the first reconnection attempt, doubled up to max_delay
    max_delay: float = 30.0
    keepalive: int = 30  # seconds: how soon a silent broker is noticed
    close_timeout: float = 2.0  # seconds close() waits for the buffer to drain

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("the MQTT broker's host is missing")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"the MQTT port must be 1-65535, got {self.port}")
        levels = self.prefix.split("/")
        if not self.prefix or any(not level or "+" in level or "#" in level for level in levels):
            raise ValueError(f"the topic prefix {self.prefix!r} must be non-empty levels without + or #")
        if self.buffer < 1 or self.window < 1 or self.keepalive < 1:
            raise ValueError("buffer, window and keepalive must be at least 1")
        if not 0 < self.min_delay <= self.max_delay or self.close_timeout < 0:
            raise ValueError("the reconnection delays must satisfy 0 < min_delay <= max_delay")

    @classmethod
    def from_url(cls, text: str, **options: Any) -> MqttOptions:
        """mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX] (port 1883, prefix streamrec by default);
        ValueError with a sentence otherwise."""
        parts = urlsplit(text)
        if parts.scheme != "mqtt":
            raise ValueError(f"expected mqtt://HOST[:PORT][/PREFIX], got {text!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"an MQTT address takes no ?query or #fragment, got {text!r}")
        try:
            port = parts.port if parts.port is not None else DEFAULT_PORT
        except ValueError:
            raise ValueError(f"the MQTT port must be 1-65535, got {text!r}") from None
        return cls(
            parts.hostname or "",
            port,
            parts.path.strip("/") or DEFAULT_PREFIX,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            **options,
        )

    @property
    def url(self) -> str:
        """The broker's address for messages (without credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}/{self.prefix}"

    def topic(self, stream: str, event_type: str) -> str:
        return f"{self.prefix}/{stream}/{event_type}"


@dataclass(frozen=True)
class _Message:
    stream: str
    topic: str
    payload: bytes
    retain: bool
    status: tuple[str, str] | None  # (state, detail) of a status event
    is_event: bool = True  # False: a drop report made here


@dataclass
class MqttStats:
    events: int = 0  # events handed to send()
    delivered: int = 0  # events the broker acknowledged
    dropped: int = 0  # events that never reached the broker (buffer overflow, or left over at close)
    unconfirmed: int = 0  # published but not acknowledged when the sink closed
    connections: int = 0  # successful connections, the first included
    dropped_by_stream: dict[str, int] = field(default_factory=dict)


class MqttSink:
    """A runtime sink (sinks.Sink): send() never waits for the broker. Starts connecting at once; a broker
    that is not up yet is retried with back-off while the buffer fills."""

    def __init__(self, options: MqttOptions) -> None:
        self.options = options
        self.stats = MqttStats()
        self._cond = threading.Condition()
        self._pending: deque[_Message] = deque()
        # Taken from the buffer by the pump but not yet handed to paho: close() must wait for these too, or
        # an event between the two would be counted nowhere (seen under load).
        self._publishing = 0
        self._in_flight: dict[int, bool] = {}  # mid -> is an event (not a drop report)
        self._acked_early: set[int] = set()  # PUBACKs that beat publish() back to the pump
        self._unreported: dict[str, int] = {}  # stream -> events dropped since its last drop report
        self._state: dict[str, tuple[str, str]] = {}  # stream -> its state as of the last event gone from the buffer
        self._connected = False
        self._resuming = False  # after a reconnection: paho resends the unacknowledged first
        self._closed = False  # send() takes no more events
        self._halt = False  # the pump stops
        self._outage_logged = False

        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if options.username is not None:
            self._client.username_pw_set(options.username, options.password)
        self._client.max_inflight_messages_set(options.window)
        self._client.reconnect_delay_set(options.min_delay, options.max_delay)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        log.info("mqtt: publishing events to %s (QoS %d)", options.url, QOS)
        self._client.connect_async(options.host, options.port, options.keepalive)
        self._client.loop_start()  # paho's thread: network I/O and reconnection with back-off
        self._pump_thread = threading.Thread(target=self._pump, name="mqtt", daemon=True)
        self._pump_thread.start()

    # --- the runtime's side ---------------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        stream, kind = str(event.get("stream", "")), str(event.get("type", "event"))
        status = (str(event.get("state", "")), str(event.get("detail", ""))) if kind == "status" else None
        payload = json.dumps(event, separators=(",", ":")).encode()  # the websocket's exact text
        message = _Message(stream, self.options.topic(stream, kind), payload, kind == "status", status)
        with self._cond:
            if self._closed:
                return
            self.stats.events += 1
            if len(self._pending) >= self.options.buffer:
                self._drop(self._pending.popleft())
            self._pending.append(message)
            self._cond.notify_all()

    def close(self) -> None:
        """Waits up to close_timeout for the buffer to reach the broker, then disconnects and logs the counts."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            deadline = time.monotonic() + self.options.close_timeout
            while self._pending or self._in_flight or self._unreported or self._publishing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._halt = True
            while self._pending:
                self._drop(self._pending.popleft())
            self.stats.unconfirmed = sum(self._in_flight.values()) + self._publishing
            self._cond.notify_all()
        self._pump_thread.join(timeout=1.0)
        self._client.disconnect()
        self._client.loop_stop()
        s = self.stats
        report = log.warning if s.dropped or s.unconfirmed else log.info
        report(
            "mqtt: %d of %d events delivered to %s, %d dropped (broker unreachable or too slow), %d unconfirmed",
            s.delivered,
            s.events,
            self.options.url,
            s.dropped,
            s.unconfirmed,
        )

    # --- the pump thread ------------------------------------------------------------------------

    def _drop(self, message: _Message) -> None:
        """Counts an event that will never be published (under the lock)."""
        self._gone(message)
        self.stats.dropped += 1
        self.stats.dropped_by_stream[message.stream] = self.stats.dropped_by_stream.get(message.stream, 0) + 1
        self._unreported[message.stream] = self._unreported.get(message.stream, 0) + 1

    def _gone(self, message: _Message) -> None:
        if message.status is not None:
            self._state[message.stream] = message.status

    def _may_publish(self) -> bool:
        return (
            self._connected
            and not self._resuming
            and len(self._in_flight) < self.options.window
            and bool(self._pending or self._unreported)
        )

    def _take(self) -> list[_Message]:
        """The next messages to publish (under the lock): drop reports first, then the oldest events.

        A stream's report goes before its remaining events and after everything it lost (the buffer drops
        the oldest), so its `state` is the stream's state at that point of the sequence."""
        free = self.options.window - len(self._in_flight)
        batch = []
        for stream in list(self._unreported)[:free]:
            dropped = self._unreported.pop(stream)
            state, detail = self._state.get(stream, ("started", ""))
            note = f"{dropped} events of this stream dropped before reaching the MQTT broker"
            event = {
                "type": "status",
                "stream": stream,
                "state": state,
                "detail": f"{detail} ({note})" if detail else note,
                "dropped": dropped,
            }
            payload = json.dumps(event, separators=(",", ":")).encode()
            batch.append(_Message(stream, self.options.topic(stream, "status"), payload, True, None, is_event=False))
        while self._pending and len(batch) < free:
            message = self._pending.popleft()
            self._gone(message)
            batch.append(message)
        return batch

    def _pump(self) -> None:
        while True:
            with self._cond:
                while not self._halt and not self._may_publish():
                    self._cond.wait()
                if self._halt:
                    return
                batch = self._take()
                self._publishing = sum(m.is_event for m in batch)
            # Outside the lock: paho calls on_publish holding its own lock, which then takes ours.
            for message in batch:
                info = self._client.publish(message.topic, message.payload, qos=QOS, retain=message.retain)
                with self._cond:
                    self._publishing -= message.is_event
                    self._cond.notify_all()  # close() may be waiting for this batch
                    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho resends it
                        log.warning("mqtt: publishing on %s failed: %s", message.topic, mqtt.error_string(info.rc))
                        if message.is_event:
                            self._drop(message)
                    elif info.mid in self._acked_early:
                        self._acked_early.discard(info.mid)
                        self.stats.delivered += message.is_event
                    else:
                        self._in_flight[info.mid] = message.is_event

    # --- paho's callbacks (its network thread) --------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:  # bad credentials, say: paho retries, with back-off
            self._log_outage(f"the broker {self.options.url} refused the connection ({reason})")
            return
        with self._cond:
            self._connected = True
            self._resuming = bool(self._in_flight)
            self.stats.connections += 1
            lost = sum(self._unreported.values())
            self._outage_logged = False
            self._cond.notify_all()
        if self.stats.connections == 1:
            log.info("mqtt: connected to %s", self.options.url)
        else:
            log.info("mqtt: reconnected to %s; %d events were dropped while it was unreachable", self.options.url, lost)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._log_outage(f"cannot reach the broker {self.options.url}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            self._connected = False
            closing = self._closed
        if not closing:
            self._log_outage(f"lost the broker {self.options.url}")

    def _log_outage(self, what: str) -> None:
        """One warning per outage, not one per attempt."""
        with self._cond:
            if self._outage_logged:
                return
            self._outage_logged = True
        o = self.options
        log.warning(
            "mqtt: %s; retrying after %g s, doubling up to %g s, keeping the newest %d events meanwhile",
            what,
            o.min_delay,
            o.max_delay,
            o.buffer,
        )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._cond:
            if mid in self._in_flight:
                self.stats.delivered += self._in_flight.pop(mid)
            else:
                self._acked_early.add(mid)
            if not self._in_flight:
                self._resuming = False
            self._cond.notify_all()
