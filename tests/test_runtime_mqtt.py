"""The MQTT sink against a real broker: Debian's mosquitto started on a free loopback port with a
temporary configuration, read by a real paho subscriber."""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from streamrec.runtime.mqtt_sink import MqttOptions, MqttSink
from streamrec.runtime.pipeline import Runtime, RuntimeOptions
from streamrec.runtime.sinks import CallbackSink
from streamrec.runtime.sources import SourceSpec

SEARCH = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"  # Debian puts the broker in sbin
MOSQUITTO = shutil.which("mosquitto", path=SEARCH)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd", path=SEARCH)
pytestmark = [
    pytest.mark.timeout(120),  # brokers, sockets and threads: never hang CI
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (scripts/install.sh installs it)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:port. Persistent (its folder): a restart keeps subscriptions and the
    messages queued for a subscriber, so a test sees only what the publisher lost."""

    def __init__(self, root: Path, password_file: Path | None = None) -> None:
        self.port = free_port()
        self.root = root
        self.log = root / "mosquitto.log"
        self.config = root / "mosquitto.conf"
        # run as root (CI), mosquitto would switch to the user "mosquitto", who cannot write this folder
        login = f"allow_anonymous false\npassword_file {password_file}\n" if password_file else "allow_anonymous true\n"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n{login}"
            f"persistence true\npersistence_location {root}/\nuser {getpass.getuser()}\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                assert self.process.poll() is None, f"mosquitto exited:\n{self.log.read_text()}"
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen within 10 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its database and exits
            self.process.wait(timeout=10)
        self.process = None


class Subscriber:
    """A paho client subscribed (QoS 1, persistent session) to `topic`, collecting what arrives."""

    def __init__(self, port: int, topic: str, client_id: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the subscription was not acknowledged"

    def _message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def wait_for(self, done: Callable[[list[dict]], bool], timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(events := self.events()):
                return events
            time.sleep(0.05)
        raise AssertionError(f"timed out; received {self.events()}")

    def events(self) -> list[dict]:
        with self._lock:
            return [json.loads(m.payload) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path):
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def test_every_event_reaches_a_subscriber_in_order_as_the_websocket_json(
    broker: Broker, runtime_bundle: Path, runtime_clips: Path, tmp_path: Path, streamrec_cli
):
    subscriber = Subscriber(broker.port, "site/one/#", "viewer")
    jsonl = tmp_path / "events.jsonl"
    clips = [str(runtime_clips / name) for name in ("av.mp4", "short.wav")]
    url = f"mqtt://127.0.0.1:{broker.port}/site/one"
    common = ("--model", str(runtime_bundle), "--backend", "torch", "--no-view")
    assert streamrec_cli("run", *clips, *common, "--jsonl", str(jsonl), "--mqtt", url) == 0
    lines = jsonl.read_bytes().splitlines()
    expected = [json.loads(line) for line in lines]
    assert {e["stream"] for e in expected} == {"av", "short"} and len(expected) > 8
    received = subscriber.wait_for(lambda events: len(events) >= len(expected))
    subscriber.close()
    # every event, once, in the order emitted (two streams interleaved), the same JSON text as --jsonl
    assert received == expected
    assert [m.payload for m in subscriber.messages] == lines
    assert [m.topic for m in subscriber.messages] == [f"site/one/{e['stream']}/{e['type']}" for e in expected]
    assert all(m.qos == 1 for m in subscriber.messages)
    # status events are retained: a consumer that subscribes after the run learns each stream's last state
    late = Subscriber(broker.port, "site/one/+/status", "late")
    retained = late.wait_for(lambda events: len(events) >= 2)
    late.close()
    assert {(e["stream"], e["state"]) for e in retained} == {("av", "ended"), ("short", "ended")}
    assert all(m.retain for m in late.messages)


@pytest.mark.slow  # real-time playback (6 s) and a broker restart
def test_a_broker_outage_mid_run_is_reconnected_and_its_drops_counted_and_reported(
    broker: Broker, runtime_bundle: Path, runtime_clips: Path
):
    subscriber = Subscriber(broker.port, "t/#", "viewer")
    sink = MqttSink(MqttOptions("127.0.0.1", broker.port, "t", buffer=2, min_delay=0.1, max_delay=0.4))
    emitted: list[dict] = []
    spec = SourceSpec("file", str(runtime_clips / "long.mp4"), realtime=True)
    runtime = Runtime([spec], RuntimeOptions(bundle=runtime_bundle), sinks=[CallbackSink(emitted.append), sink])
    run = threading.Thread(target=runtime.run)
    run.start()
    subscriber.wait_for(lambda events: sum(e["type"] == "prediction" for e in events) >= 2)
    broker.stop()
    time.sleep(2.0)  # ~4 predictions at a 0.5 s hop: more than the buffer of 2 holds
    broker.start()
    run.join(timeout=60)
    assert not run.is_alive()
    subscriber.wait_for(lambda events: bool(events) and events[-1].get("state") == "ended")
    subscriber.close()

    assert sink.stats.connections == 2  # reconnected by itself
    assert sink.stats.dropped >= 1 and sink.stats.dropped == sink.stats.dropped_by_stream["long"]
    assert sink.stats.delivered + sink.stats.dropped == sink.stats.events == len(emitted)
    # At least once: a message the broker took just before it stopped may come twice.
    unique = [json.loads(p) for p in dict.fromkeys(m.payload for m in subscriber.messages)]
    reports = [e for e in unique if "dropped" in e]
    assert len(reports) == 1
    report = reports[0]
    assert report["type"] == "status" and report["state"] == "started" and report["dropped"] == sink.stats.dropped
    # Everything else is what the runtime emitted, in order, less exactly the events the sink dropped, which
    # were the ones just before the report (the buffer drops the oldest).
    events = [e for e in unique if e is not report]
    assert events == [e for e in emitted if e in events]
    assert len(events) == len(emitted) - sink.stats.dropped
    at = unique.index(report)
    gap = emitted[emitted.index(unique[at - 1]) + 1 : emitted.index(unique[at + 1])]
    assert len(gap) == sink.stats.dropped
    assert not any(e in events for e in gap)


def test_a_broker_that_is_down_costs_the_oldest_events_counted_and_logged(caplog):
    caplog.set_level(logging.INFO, logger="streamrec.runtime.mqtt_sink")
    options = MqttOptions("127.0.0.1", free_port(), buffer=3, min_delay=0.1, max_delay=0.2, close_timeout=0.3)
    sink = MqttSink(options)  # nothing listens there: it keeps retrying
    for seq in range(5):
        sink.send({"type": "prediction", "stream": "cam1", "seq": seq})
    start = time.monotonic()
    sink.close()
    assert time.monotonic() - start < 3.0
    assert (sink.stats.events, sink.stats.delivered, sink.stats.dropped) == (5, 0, 5)
    assert sink.stats.connections == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot reach the broker" in m for m in messages)
    assert any("0 of 5 events delivered" in m and "5 dropped" in m for m in messages)
    sink.send({"type": "prediction", "stream": "cam1", "seq": 5})  # after close: ignored, not counted
    assert sink.stats.events == 5


def test_a_drop_report_carries_the_state_at_the_gap_even_a_final_one(tmp_path: Path):
    broker = Broker(tmp_path)  # not started yet: the sink buffers, then connects with back-off
    sink = MqttSink(MqttOptions("127.0.0.1", broker.port, "r", buffer=1, min_delay=0.1, max_delay=0.2))
    sink.send({"type": "status", "stream": "a", "state": "started", "detail": "audio aac"})
    sink.send({"type": "status", "stream": "a", "state": "ended", "detail": "end of media"})
    sink.send({"type": "status", "stream": "b", "state": "started", "detail": "video h264"})  # pushes out a's
    broker.start()
    try:
        deadline = time.monotonic() + 10
        while sink.stats.delivered < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        sink.close()
        # statuses are retained: a subscriber that comes now gets each stream's last one
        late = Subscriber(broker.port, "r/+/status", "late")
        retained = {e["stream"]: e for e in late.wait_for(lambda events: len(events) >= 2)}
        late.close()
    finally:
        broker.stop()
    assert (sink.stats.delivered, sink.stats.dropped, sink.stats.dropped_by_stream) == (1, 2, {"a": 2})
    report = retained["a"]
    assert (report["state"], report["dropped"]) == ("ended", 2)  # the final state survives as the report
    assert report["detail"].startswith("end of media (2 events of this stream dropped")
    assert retained["b"] == {"type": "status", "stream": "b", "state": "started", "detail": "video h264"}


def test_credentials_in_the_url_log_in_and_wrong_ones_are_refused_and_counted(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="streamrec.runtime.mqtt_sink")
    passwd = tmp_path / "passwd"
    subprocess.run([str(MOSQUITTO_PASSWD), "-b", "-c", str(passwd), "ingest", "p@ss:1"], check=True)
    broker = Broker(tmp_path, passwd)
    broker.start()
    try:
        event = {"type": "status", "stream": "cam1", "state": "started", "detail": ""}
        for password, delivered in (("p%40ss%3A1", 1), ("wrong", 0)):
            url = f"mqtt://ingest:{password}@127.0.0.1:{broker.port}/secure"
            sink = MqttSink(MqttOptions.from_url(url, min_delay=0.1, max_delay=0.2, close_timeout=1.0))
            sink.send(event)
            sink.close()
            assert (sink.stats.delivered, sink.stats.dropped) == (delivered, 1 - delivered)
    finally:
        broker.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("refused the connection (Not authorized)" in m for m in warnings) == 1  # once, not per attempt
    assert not any("p@ss" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", ("broker", 1883, "streamrec", None)),
        ("mqtt://10.0.0.5:1884/site/a/", ("10.0.0.5", 1884, "site/a", None)),
        ("mqtt://ingest:p%40ss@[::1]:1883/x", ("::1", 1883, "x", "ingest")),
    ],
)
def test_broker_urls(url: str, expected: tuple) -> None:
    options = MqttOptions.from_url(url)
    assert (options.host, options.port, options.prefix, options.username) == expected
    assert options.topic("cam1", "prediction") == f"{expected[2]}/cam1/prediction"
    assert "@" not in options.url  # no credentials in log lines


@pytest.mark.parametrize(
    "url", ["http://broker", "mqtt://", "mqtt://broker:0", "mqtt://broker:99999", "mqtt://b/a/+/c", "mqtt://b/a//c"]
)
def test_bad_broker_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        MqttOptions.from_url(url)


def test_a_bad_mqtt_option_is_one_line_exit_2(runtime_clips: Path, streamrec_cli, capsys) -> None:
    assert streamrec_cli("run", str(runtime_clips / "av.mp4"), "--no-view", "--mqtt", "tcp://broker") == 2
    err = capsys.readouterr().err.strip()
    assert "--mqtt" in err and "mqtt://HOST" in err and len(err.splitlines()) == 1
