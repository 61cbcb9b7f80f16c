"""Prints the events of a running streamrec websocket server (`streamrec demo`, `run`, `live`).

.venv/bin/python examples/websocket_client.py                       # ws://127.0.0.1:8765
.venv/bin/python examples/websocket_client.py ws://HOST:PORT --token SECRET
"""

import argparse
import json
from urllib.parse import quote

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8765")
    parser.add_argument("--token", help="the server's --token")
    args = parser.parse_args()
    url = args.url + (f"?token={quote(args.token)}" if args.token else "")
    try:
        websocket = connect(url)
    except InvalidStatus as e:  # 401: the server wants a --token
        raise SystemExit(
            f"refused by {args.url}: HTTP {e.response.status_code} {e.response.body.decode().strip()}"
        ) from None
    with websocket:
        for message in websocket:  # ends when the server closes the connection
            event = json.loads(message)
            if event["type"] == "hello":
                streams = ", ".join(f"{s['id']} ({s['source']})" for s in event["streams"])
                print(f"connected: {len(event['classes'])} classes; streams: {streams}")
            elif event["type"] == "status":
                print(f"[{event['stream']}] {event['state']} {event['detail']}")
            else:
                top = ", ".join(f"{label['name']} {label['score']:.2f}" for label in event["labels"][:3])
                active = ", ".join(event["active"]) or "-"
                latency = f"{event['latency_ms']:.0f} ms"
                print(f"[{event['stream']}] t={event['t']:7.2f}s  active: {active:<20} top: {top}  ({latency})")


if __name__ == "__main__":
    main()
