"""Where the files shipped inside the package lie: the bundled model, the example clip, the web view."""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
ASSETS = PACKAGE / "assets"
DEFAULT_BUNDLE = ASSETS / "model"  # the model every command uses without --model
EXAMPLE_CLIP = ASSETS / "example.mp4"  # `streamrec demo`'s clip: violin, piano, drums, trumpet, 6 s each
EXAMPLE_SEGMENTS = ASSETS / "example.json"  # the clip's instrument segments (start, end, label)
WEB_ROOT = PACKAGE / "web"  # the browser live view: plain HTML/JS/CSS served by streamrec.runtime.broadcast
