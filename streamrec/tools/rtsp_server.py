"""A loopback RTSP server for trying and testing `streamrec run rtsp://...` (GStreamer's RTSP server).

Run it with the system Python, which has the GStreamer bindings (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad,ugly}, gstreamer1.0-libav):

    /usr/bin/python3 streamrec/tools/rtsp_server.py --port 8554            # live test pattern + 440 Hz tone
    /usr/bin/python3 streamrec/tools/rtsp_server.py --file clip.mp4        # an H.264 + AAC mp4

and open rtsp://127.0.0.1:8554/test. It prints "ready" once it listens and runs until killed.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# A live source: frames and tone are generated in real time, so the stream never ends by itself.
TEST_LAUNCH = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 "
    "audiotestsrc is-live=true wave=sine freq={freq} volume=0.3 ! audioconvert ! audioresample "
    "! audio/x-raw,rate=44100,channels=1 ! avenc_aac ! rtpmp4gpay name=pay1 pt=97 )"
)
# An mp4 with H.264 video and AAC audio, streamed without re-encoding (ENVIRONMENT.md).
FILE_LAUNCH = (
    "( filesrc location={path} ! qtdemux name=d d.video_0 ! queue ! h264parse ! rtph264pay name=pay0 pt=96 "
    "d.audio_0 ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97 )"
)


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve a test stream or an mp4 over RTSP on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/test", help="mount point (default /test)")
    parser.add_argument("--file", help="H.264 + AAC mp4 to serve instead of the live test pattern")
    parser.add_argument("--freq", type=float, default=440.0, help="tone of the test pattern in Hz")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(FILE_LAUNCH.format(path=args.file) if args.file else TEST_LAUNCH.format(freq=args.freq))
    factory.set_shared(True)  # one pipeline for every client, as a camera would
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    signal.signal(signal.SIGINT, lambda *_: loop.quit())
    print(f"ready rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
