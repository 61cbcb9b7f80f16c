#!/usr/bin/env bash
# Installs streamrec on a fresh Debian 12 / Ubuntu machine: system packages (media tools, the
# training sources of shared/DATA.md, a PulseAudio virtual microphone, GStreamer's RTSP server),
# a virtual environment in .venv with the package and its test tools, and the emoji artwork from
# the npm registry. Safe to run again: every step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  # decoding/encoding media, rendering instruments, speech for background noise
  ffmpeg fluidsynth espeak-ng sox
  # training sources (shared/DATA.md): real sampled instruments (soundfonts; LMMS's one-note recordings, opt-in) and
  # drawings, recorded speech (telephone-band prompts, full-band Czech and Dutch dialogues, words spoken by
  # native speakers of 25 languages)
  asterisk-core-sounds-en-wav fillets-ng-data-cs fillets-ng-data-nl ktuberling-data
  fluid-soundfont-gm musescore-general-soundfont hydrogen-drumkits lmms-common openclipart-svg qabcs-data
  # runtime libraries of PyPI wheels: PortAudio for sounddevice, libGL for OpenCV, cairo for cairosvg
  libportaudio2 libgl1 libglib2.0-0 libcairo2
  # a virtual microphone (PulseAudio null sink) and an RTSP server on loopback, used by the tests
  pulseaudio pulseaudio-utils libasound2-plugins
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav
  # an MQTT broker: the --mqtt sink's tests start their own mosquitto on a free loopback port
  mosquitto
  # headless Chromium and its WebDriver, for the test of the browser live view
  chromium chromium-driver
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "==> pip install -e .[dev,triton] with the versions CI tested (constraints.txt)"
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,triton]' \
  2> >(grep -v "is ignored: it is neither" >&2)

# musicnn's pretrained checkpoints (train/musicnn.py reads them without TensorFlow). --no-deps: the wheel asks for
# TensorFlow 1.x and numpy<1.17, neither of which its checkpoints need.
echo "==> pip install --no-deps musicnn (constraints.txt)"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt musicnn \
  2> >(grep -v "is ignored: it is neither" >&2)

# The Triton test server (streamrec/tools/triton_server.py): PyTriton bundles tritonserver but needs numpy<2, so it
# gets its own environment (~125 MB of wheels, ~450 MB installed).
if [ ! -x .venv-triton/bin/python ]; then
  echo "==> creating .venv-triton (PyTriton: a Triton server on loopback for the triton backend's tests)"
  "$PYTHON" -m venv .venv-triton
fi
echo "==> pip install nvidia-pytriton onnxruntime into .venv-triton (constraints-triton.txt)"
.venv-triton/bin/python -m pip install -q --disable-pip-version-check -c constraints-triton.txt \
  nvidia-pytriton onnxruntime "numpy<2" 2> >(grep -v "is ignored: it is neither" >&2)

echo "==> fetching emoji artwork (npm registry) into the training-source cache"
.venv/bin/streamrec data sources --fetch
echo "==> streamrec installed: .venv/bin/streamrec --help"
