"""Prints the events that `streamrec run/live/demo --mqtt URL` publish to an MQTT broker, and what was lost.

.venv/bin/python examples/mqtt_consumer.py mqtt://127.0.0.1:1883/streamrec        # every stream
.venv/bin/python examples/mqtt_consumer.py mqtt://viewer:PASS@broker/site1 --stream cam-011
"""

import argparse
import json

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from streamrec.runtime.mqtt_sink import MqttOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="mqtt://[USER:PASS@]HOST[:PORT][/PREFIX], as given to --mqtt")
    parser.add_argument("--stream", default="+", help="one stream id (default: every stream)")
    args = parser.parse_args()
    options = MqttOptions.from_url(args.url)
    topic = f"{options.prefix}/{args.stream}/#"
    next_seq: dict[str, int] = {}  # stream -> the seq its next prediction should have

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        client.subscribe(topic, qos=1)  # again after every reconnection
        print(f"subscribed to {topic} on {options.url} ({reason})")

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        event = json.loads(message.payload)
        stream = event["stream"]
        if event["type"] == "status":
            kept = " (retained: the state before we subscribed)" if message.retain else ""
            lost = f"  !! {event['dropped']} events lost before the broker" if "dropped" in event else ""
            print(f"[{stream}] {event['state']} {event['detail']}{kept}{lost}")
        elif event["type"] == "prediction":
            seq, expected = event["seq"], next_seq.get(stream)
            if expected is not None and seq < expected:
                return  # QoS 1 is at least once: a repeat after a reconnection
            if expected is not None and seq > expected:
                print(f"[{stream}] !! predictions {expected}..{seq - 1} missing")
            next_seq[stream] = seq + 1
            top = ", ".join(f"{label['name']} {label['score']:.2f}" for label in event["labels"][:3])
            active = ", ".join(event["active"]) or "-"
            print(f"[{stream}] t={event['t']:7.2f}s  active: {active:<20} top: {top}")

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(options.host, options.port)
    try:
        client.loop_forever()  # reconnects by itself; Ctrl-C to stop
    except KeyboardInterrupt:
        client.disconnect()


if __name__ == "__main__":
    main()
