"""Where the files shipped inside the package lie (the bundled model, the example clip, the web view), and
where what streamrec builds for this user goes (the user cache: decoded clips, engines of the bundled model)."""

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
ASSETS = PACKAGE / "assets"
DEFAULT_BUNDLE = ASSETS / "model"  # the model every command uses without --model
EXAMPLE_CLIP = ASSETS / "example.mp4"  # `streamrec demo`'s clip: violin, piano, drums, trumpet, 6 s each
EXAMPLE_SEGMENTS = ASSETS / "example.json"  # the clip's instrument segments (start, end, label)
WEB_ROOT = PACKAGE / "web"  # the browser live view: plain HTML/JS/CSS served by streamrec.runtime.broadcast


def user_cache_dir() -> Path:
    """$STREAMREC_CACHE, else $XDG_CACHE_HOME/streamrec, else ~/.cache/streamrec."""
    base = os.environ.get("STREAMREC_CACHE")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    root = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "streamrec"
