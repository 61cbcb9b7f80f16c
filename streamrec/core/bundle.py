"""The model bundle: one directory holding everything needed to run a model.

    BUNDLE/manifest.json   classes, front-end parameters, per-network architecture and dimensions,
                           weights file and its sha256, training data summary and metrics, versions
    BUNDLE/audio.pt        {"kind", "arch", "dims", "state_dict"} for each network present
    BUNDLE/video.pt
    BUNDLE/fusion.pt
    BUNDLE/tagger.pt       optional: a pretrained music tagger with a probe to our classes (core.models.tagger)

A checkpoint carries the dimensions that rebuild its network, so a bundle needs no code changes to
load; the manifest repeats them for people and for engines/, whose caches key on the sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy
import torch
import torchaudio

from streamrec._version import __version__
from streamrec.core.assets import DEFAULT_BUNDLE
from streamrec.core.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
KINDS = ("audio", "video", "fusion", "tagger")  # tagger: optional, streamrec.core.models.tagger


class BundleError(UserError):
    """A bundle that is missing, incomplete or damaged; the message names the file and the problem."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    return {
        "streamrec": __version__,
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Bundle:
    """A model bundle on disk. `manifest` is the parsed manifest.json."""

    root: Path
    manifest: dict[str, Any]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    def has(self, kind: str) -> bool:
        return kind in self.manifest.get("networks", {})

    def network(self, kind: str) -> dict[str, Any]:
        """The manifest entry of one network: arch, dims, weights, sha256, and kind-specific settings."""
        try:
            return self.manifest["networks"][kind]
        except KeyError:
            raise BundleError(f"bundle {self.root} has no {kind} network") from None

    def weights_path(self, kind: str) -> Path:
        return self.root / self.network(kind)["weights"]

    def load_checkpoint(self, kind: str) -> dict[str, Any]:
        """The checkpoint of one network, checked against the manifest's sha256."""
        entry = self.network(kind)
        path = self.weights_path(kind)
        if not path.exists():
            raise BundleError(f"bundle {self.root} lacks {path.name}")
        if sha256_of(path) != entry["sha256"]:
            raise BundleError(f"{path} does not match the sha256 in {self.root / MANIFEST} (changed or damaged)")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise BundleError(f"cannot read {path}: {e}") from e

    @classmethod
    def load(cls, root: str | Path | None = None) -> Bundle:
        """Reads BUNDLE/manifest.json (default: the bundle shipped inside the package)."""
        path = Path(root) if root is not None else DEFAULT_BUNDLE
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            raise BundleError(f"{path} is not a model bundle: no {MANIFEST}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BundleError(f"{manifest_path} is not valid JSON: {e}") from e
        if manifest.get("format") != FORMAT_VERSION:
            raise BundleError(
                f"{manifest_path} has format {manifest.get('format')!r}; this streamrec reads format {FORMAT_VERSION}"
            )
        return cls(path, manifest)

    @classmethod
    def create(cls, root: str | Path, classes: tuple[str, ...]) -> Bundle:
        """An empty bundle, or the existing one at root when its classes match (networks are added one by one)."""
        path = Path(root)
        if (path / MANIFEST).exists():
            bundle = cls.load(path)
            if bundle.classes != tuple(classes):
                raise BundleError(f"bundle {path} has classes {', '.join(bundle.classes)}, not {', '.join(classes)}")
            return bundle
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, {"format": FORMAT_VERSION, "classes": list(classes), "networks": {}})

    def save_network(
        self,
        kind: str,
        module: torch.nn.Module,
        arch: str,
        dims: dict,
        settings: dict,
        metrics: dict | None = None,
        training: dict | None = None,
    ) -> Path:
        """Writes KIND.pt and its manifest entry; settings hold what the runtime needs (front end, window...)."""
        if kind not in KINDS:
            raise ValueError(f"unknown network kind {kind!r}")
        path = self.root / f"{kind}.pt"
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        tmp = path.with_suffix(".tmp")
        torch.save({"kind": kind, "arch": arch, "dims": dims, "state_dict": state}, tmp)
        tmp.replace(path)
        self.manifest.setdefault("networks", {})[kind] = {
            "arch": arch,
            "dims": dims,
            "weights": path.name,
            "sha256": sha256_of(path),
            "parameters": sum(v.numel() for v in state.values() if v.dtype.is_floating_point),
            **settings,
            "metrics": metrics or {},
            "training": training or {},
        }
        self.write_manifest()
        return path

    def write_manifest(self) -> None:
        self.manifest["software"] = software_versions()
        self.manifest["written"] = datetime.now(UTC).isoformat(timespec="seconds")
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.root / MANIFEST)
