"""The engine cache beside a bundle: built artifacts keyed by everything they depend on.

    BUNDLE/engines/onnx/audio-fp32-<key>.onnx          the exported graph (source of the other two)
    BUNDLE/engines/onnx/audio-fp32-<key>.json          its sidecar: key fields, artifact sha256, metadata
    BUNDLE/engines/onnxruntime/fusion-int8-<key>.onnx  quantized graphs
    BUNDLE/engines/tensorrt/video-fp16-<key>.plan      serialized TensorRT engines (+ .calib for INT8)
    BUNDLE/engines/tensorrt/timing-<gpu key>.cache     TensorRT's timing cache, shared by builds on one GPU

<key> is a digest of the key fields: the source weights' sha256 (from the bundle manifest), the export
format and exporter version, the runtime's version, the GPU and its compute capability, build options.
So a changed bundle or another machine gets another file name, and nothing stale can be picked up. On a
miss, the cache looks at the other files of that kind and precision to say why it has to build: stale
ones (built from other weights) are removed with a warning; foreign ones (another runtime version or
GPU, valid there) are reported and kept. A file whose bytes do not match its sidecar's sha256, whose
sidecar is missing or unreadable, or that its runtime refuses to load, is reported, removed and rebuilt.

The sidecar is written last, so an interrupted build leaves an artifact without one: treated as damaged.
For the bundled model, and for any bundle whose directory is read-only, the cache lives in the user's
cache instead: $XDG_CACHE_HOME/streamrec/engines/<digest of the bundle's path>/ (~/.cache by default;
$STREAMREC_CACHE replaces $XDG_CACHE_HOME/streamrec), so nothing is written into the installed package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamrec.core.assets import DEFAULT_BUNDLE, user_cache_dir
from streamrec.core.bundle import Bundle, sha256_of

log = logging.getLogger(__name__)

SIDECAR = ".json"


@dataclass(frozen=True)
class EngineKey:
    """Identity of one artifact. `fields` are everything the artifact's bytes depend on, as strings."""

    backend: str  # cache folder: "onnx" (exports), "onnxruntime", "tensorrt"
    kind: str
    precision: str
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        blob = json.dumps(
            {"backend": self.backend, "kind": self.kind, "precision": self.precision, **dict(self.fields)},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def stem(self) -> str:
        return f"{self.kind}-{self.precision}-{self.digest}"


@dataclass(frozen=True)
class CachedEngine:
    path: Path
    metadata: dict[str, Any]


def cache_root(bundle: Bundle) -> Path:
    """BUNDLE/engines for a user's own writable bundle. The bundled model (inside the installed package, or
    the checkout a wheel is built from) and any read-only bundle get a per-bundle folder of the user's cache
    instead: engines never land in site-packages nor in a wheel."""
    if os.access(bundle.root, os.W_OK) and bundle.root.resolve() != DEFAULT_BUNDLE.resolve():
        return bundle.root / "engines"
    # One folder per bundle: a miss removes other weights' engines of a folder as stale (_report_others).
    folder = user_cache_dir() / "engines" / hashlib.sha256(str(bundle.root.resolve()).encode()).hexdigest()[:16]
    log.debug("engines of bundle %s are cached in %s", bundle.root, folder)
    return folder


def _describe_difference(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k, '-')} (here {new.get(k, '-')})" for k in keys if old.get(k) != new.get(k))


class EngineCache:
    """Finds, validates and stores artifacts under `root` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_bundle(cls, bundle: Bundle) -> EngineCache:
        return cls(cache_root(bundle))

    def path(self, key: EngineKey, suffix: str) -> Path:
        return self.root / key.backend / (key.stem + suffix)

    def lookup(self, key: EngineKey, suffix: str) -> CachedEngine | None:
        """The valid artifact for `key`, or None after reporting (and clearing) whatever stood in its way."""
        artifact, sidecar = self.path(key, suffix), self.path(key, SIDECAR)
        if artifact.exists() or sidecar.exists():
            problem = self._check(key, artifact, sidecar)
            if problem is None:
                return CachedEngine(artifact, json.loads(sidecar.read_text(encoding="utf-8"))["metadata"])
            log.warning("cached %s engine %s is damaged (%s); rebuilding it", key.backend, artifact, problem)
            self.remove(key)
        self._report_others(key)
        return None

    def _check(self, key: EngineKey, artifact: Path, sidecar: Path) -> str | None:
        if not sidecar.exists():
            return "no sidecar: its build was interrupted"
        if not artifact.exists():
            return "the artifact is missing"
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
            recorded_fields, recorded_hash = record["key"], record["artifact_sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"unreadable sidecar {sidecar.name}: {e}"
        if recorded_fields != dict(key.fields):
            return f"its sidecar describes another build: {_describe_difference(recorded_fields, key.fields)}"
        if sha256_of(artifact) != recorded_hash:
            return f"its sha256 does not match the sidecar ({artifact.stat().st_size} bytes): truncated or overwritten"
        return None

    def _report_others(self, key: EngineKey) -> None:
        """Explains a miss: other builds of this kind and precision are stale (removed) or foreign (kept)."""
        folder = self.root / key.backend
        for sidecar in sorted(folder.glob(f"{key.kind}-{key.precision}-*{SIDECAR}")):
            stem = sidecar.name[: -len(SIDECAR)]
            try:
                fields = json.loads(sidecar.read_text(encoding="utf-8"))["key"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("removing damaged cached engine %s (unreadable sidecar: %s)", folder / stem, e)
                self._remove_stem(folder, stem)
                continue
            if fields.get("weights_sha256") != key.fields.get("weights_sha256"):
                log.warning(
                    "removing stale %s %s engine %s: built from weights %.12s, the bundle now has %.12s",
                    key.backend,
                    key.kind,
                    folder / stem,
                    fields.get("weights_sha256"),
                    key.fields.get("weights_sha256"),
                )
                self._remove_stem(folder, stem)
            else:
                log.warning(
                    "not using %s %s engine %s built for %s; building one for this machine",
                    key.backend,
                    key.kind,
                    folder / stem,
                    _describe_difference(fields, key.fields),
                )

    def store(self, key: EngineKey, built: Path, suffix: str, metadata: Mapping[str, Any]) -> CachedEngine:
        """Moves the freshly built file `built` into place, then writes its sidecar (atomically, last)."""
        artifact = self.path(key, suffix)
        artifact.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, artifact)
        record = {
            "key": dict(key.fields),
            "backend": key.backend,
            "kind": key.kind,
            "precision": key.precision,
            "artifact": artifact.name,
            "artifact_sha256": sha256_of(artifact),
            "bytes": artifact.stat().st_size,
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
            "metadata": dict(metadata),
        }
        _write_atomic(self.path(key, SIDECAR), json.dumps(record, indent=2) + "\n")
        log.info("cached %s %s %s engine in %s", key.backend, key.kind, key.precision, artifact)
        return CachedEngine(artifact, dict(metadata))

    def scratch(self, key: EngineKey, suffix: str) -> Path:
        """A private path beside the final one to build into (same filesystem, so store() can rename it)."""
        final = self.path(key, suffix)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.stem}.{os.getpid()}.tmp{suffix}")

    def remove(self, key: EngineKey) -> None:
        self._remove_stem(self.root / key.backend, key.stem)

    @staticmethod
    def _remove_stem(folder: Path, stem: str) -> None:
        for path in folder.glob(stem + ".*"):
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, key: EngineKey) -> Iterator[None]:
        """Serialises builds of one key across processes (two evals starting at once build it once)."""
        folder = self.root / key.backend
        folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock, the atomic renames still keep files whole
            yield
            return
        with open(folder / f".{key.stem}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
