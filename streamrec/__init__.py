"""streamrec: real-time recognition of musical instruments in live and recorded video.

Audio CNNs on log-mel spectrograms and a frame CNN at 1 fps, combined by a late-fusion network
(Slizovskaia, Gomez and Haro, ICMR 2017).

The Python entry point is `from streamrec import Runtime, RuntimeOptions` (see
examples/run_from_python.py). The package is layered: streamrec.core (what every part agrees on) <
streamrec.engines (inference backends) < streamrec.train | streamrec.runtime < streamrec.bench <
streamrec.cli; docs/architecture.md draws it, import-linter (pyproject.toml) enforces it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamrec._version import __version__

if TYPE_CHECKING:
    from streamrec.runtime.options import RuntimeOptions
    from streamrec.runtime.pipeline import Runtime

__all__ = ["Runtime", "RuntimeOptions", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import streamrec.core...` (training, engines) and the CLI's start do not load the runtime.
    if name in ("Runtime", "RuntimeOptions"):
        from streamrec.runtime import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'streamrec' has no attribute {name!r}")
