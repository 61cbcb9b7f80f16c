"""Reading a dataset in the docs/dataset.md layout: labels.csv, decoded clips, and an on-disk decode cache.

    DATASET/labels.csv    path,label,split[,labels][,any other column]
    DATASET/clips/...     media files; a clip may lack its audio or its video stream

Decoding goes through streamrec.core.media and streamrec.core.features, the code the live runtime uses, so a
clip is seen the same way in training, evaluation and at run time. A row that cannot be used (file
missing or undecodable, label outside the taxonomy) is reported with a reason and skipped; the rest
of the dataset still loads.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamrec.core.assets import user_cache_dir
from streamrec.core.classes import DEFAULT_CLASSES
from streamrec.core.errors import UserError
from streamrec.core.features import FrameConfig, preprocess_frame
from streamrec.core.media import MediaError, decode_audio, decode_frames, probe

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "split")
SPLITS = ("train", "val", "test")
LABELS_FILE = "labels.csv"
# Separator of the optional multi-label `labels` column.
LABELS_SEPARATOR = ";"
# Part of every cache key: bump it when decoding changes so that arrays cached before are not reused.
CACHE_FORMAT = 1


class DatasetError(UserError):
    """A dataset that cannot be read at all (no directory, no labels.csv, a required column missing)."""


@dataclass(frozen=True)
class ClipRecord:
    """One usable row of labels.csv."""

    path: Path  # absolute
    rel_path: str  # as written in labels.csv
    label: str  # the predominant class
    labels: tuple[str, ...]  # every class of the clip, predominant first; (label,) without a `labels` column
    split: str  # one of SPLITS
    line: int | None = None  # its line in labels.csv (the header is line 1)


@dataclass(frozen=True)
class Skipped:
    """A row left out of the dataset: its path as written in labels.csv, why, in a few words, and its
    line in labels.csv (None for rows not read from one)."""

    path: str
    reason: str
    line: int | None = None


@dataclass(frozen=True)
class DecodeSpec:
    """How clips are decoded; part of the cache key, so two specs never share cached arrays."""

    sample_rate: int = 16000  # Hz, mono audio
    frames: FrameConfig = field(default_factory=FrameConfig)  # frame rate and preprocessing
    video: bool = True  # False: leave frames undecoded (audio training needs none)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {self.sample_rate} Hz")
        if self.frames.fps <= 0 or self.frames.resize <= 0 or self.frames.crop <= 0:
            raise ValueError(f"frame rate and frame sizes must be positive, got {self.frames}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Clip:
    """A decoded clip. A modality the file lacks is None."""

    record: ClipRecord
    audio: np.ndarray | None  # (samples,) float32 mono in [-1, 1] at spec.sample_rate
    frames: np.ndarray | None  # (n, crop, crop, 3) uint8 RGB, after features.preprocess_frame
    frame_times: np.ndarray | None  # (n,) float64 seconds of media time of each frame


@dataclass
class LoadedDataset:
    """The decoded clips of a dataset in labels.csv order, and the rows that were skipped."""

    root: Path
    classes: tuple[str, ...]
    clips: list[Clip]
    skipped: list[Skipped]

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """Training targets: class indices (n_clips,) int64 of the predominant labels, and
        multi-hot (n_clips, n_classes) float32 of all labels."""
        return encode_targets([clip.record for clip in self.clips], self.classes)


def encode_targets(records: Sequence[ClipRecord], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class indices (n,) int64 of each record's label and multi-hot (n, n_classes) float32 of its labels."""
    index = {name: i for i, name in enumerate(classes)}
    indices = np.array([index[r.label] for r in records], dtype=np.int64)
    multi_hot = np.zeros((len(records), len(classes)), dtype=np.float32)
    for row, record in enumerate(records):
        multi_hot[row, [index[name] for name in record.labels]] = 1.0
    return indices, multi_hot


def _dataset_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset {path} is not a directory (expected a folder holding {LABELS_FILE})")
    return path.absolute()


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    names = tuple(classes)
    if not names:
        raise ValueError("the class list is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"the class list repeats a name: {', '.join(names)}")
    return names


def _check_splits(splits: str | Sequence[str] | None) -> tuple[str, ...]:
    if splits is None:
        return SPLITS
    # A string is one split or a comma-separated list, as typed after --split.
    names = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else [s.strip() for s in splits]
    unknown = [s for s in names if s not in SPLITS]
    if not names:
        raise DatasetError(f"no split given; expected one or more of {', '.join(SPLITS)}")
    if unknown:
        raise DatasetError(f"unknown split {', '.join(map(repr, unknown))}; expected one of {', '.join(SPLITS)}")
    return tuple(names)


def dataset_classes(root: str | os.PathLike[str]) -> tuple[str, ...]:
    """The classes a dataset's labels.csv uses (its `label` and `labels` columns): in the default
    taxonomy's order when they all belong to it, else sorted. Training takes its taxonomy from here,
    so a dataset of other instruments needs no code change."""
    csv_path = _dataset_root(root) / LABELS_FILE
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            found: set[str] = set()
            for row in csv.DictReader(fh):
                found.add((row.get("label") or "").strip())
                found.update(s.strip() for s in (row.get("labels") or "").split(LABELS_SEPARATOR))
    except FileNotFoundError as e:
        raise DatasetError(f"dataset {csv_path.parent} has no {LABELS_FILE}") from e
    found.discard("")
    if not found:
        raise DatasetError(f"{csv_path} names no class")
    if found <= set(DEFAULT_CLASSES):
        return tuple(c for c in DEFAULT_CLASSES if c in found)
    return tuple(sorted(found))


def read_labels(
    root: str | os.PathLike[str],
    classes: Sequence[str] = DEFAULT_CLASSES,
    splits: Sequence[str] | None = None,
) -> tuple[list[ClipRecord], list[Skipped]]:
    """Reads and validates DATASET/labels.csv without opening any media file.

    Returns the usable rows in file order and the skipped rows with their reasons. Rows of a split
    not in `splits` (None = all) are left out silently. In a `labels` column the predominant `label`
    is always put first and repeats are dropped. Raises DatasetError when labels.csv cannot be read
    or lacks a required column.
    """
    root_path = _dataset_root(root)
    known = set(_check_classes(classes))
    wanted = _check_splits(splits)
    csv_path = root_path / LABELS_FILE
    records: list[ClipRecord] = []
    skipped: list[Skipped] = []
    try:
        # utf-8-sig: a spreadsheet's byte-order mark must not end up in the first column's name.
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise DatasetError(f"{csv_path} is empty; it needs a header with {', '.join(REQUIRED_COLUMNS)}")
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
            missing = [c for c in REQUIRED_COLUMNS if c not in reader.fieldnames]
            if missing:
                raise DatasetError(
                    f"{csv_path} lacks the required column(s) {', '.join(missing)} "
                    f"(its header is: {', '.join(reader.fieldnames)})"
                )
            seen: dict[str, int] = {}  # normalised path -> line of its first usable row
            for row in reader:
                # csv gives None for the missing cells of a short row.
                cell = {key: (value or "").strip() for key, value in row.items() if isinstance(key, str)}
                rel_path, label, split = cell["path"], cell["label"], cell["split"]
                line = reader.line_num
                name = rel_path or f"line {line}"
                if split not in SPLITS:
                    skipped.append(Skipped(name, f"unknown split {split!r}", line))
                    continue
                if split not in wanted:
                    continue
                extra = [s.strip() for s in cell.get("labels", "").split(LABELS_SEPARATOR) if s.strip()]
                labels = tuple(dict.fromkeys([label, *extra]))
                path = root_path / rel_path
                normal = os.path.normpath(rel_path)
                reason = None
                if not rel_path:
                    reason = "empty path"
                elif os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep):
                    # A dataset names its own files: a path out of it would read anything the user can.
                    reason = "path outside the dataset directory"
                elif not label:
                    reason = "empty label"
                elif label not in known:
                    reason = f"unknown label {label!r}"
                elif unknown := [s for s in labels if s not in known]:
                    reason = f"unknown label {unknown[0]!r} in labels"
                elif normal in seen:
                    reason = f"duplicate of line {seen[normal]}"  # counted once
                elif not path.is_file():
                    reason = "file not found" if not path.exists() else "not a regular file"
                if reason is not None:
                    skipped.append(Skipped(name, reason, line))
                    continue
                seen[normal] = line
                records.append(ClipRecord(path, rel_path, label, labels, split, line))
    except FileNotFoundError as e:
        raise DatasetError(f"dataset {root_path} has no {LABELS_FILE}") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{csv_path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except (OSError, csv.Error) as e:
        raise DatasetError(f"cannot read {csv_path}: {e}") from e
    return records, skipped


def decode_clip(record: ClipRecord, spec: DecodeSpec) -> Clip:
    """Decodes one clip's audio and frames. Raises MediaError for a file that cannot be used."""
    audio = decode_audio(record.path, spec.sample_rate)
    video = decode_frames(record.path, spec.frames.fps) if spec.video else None
    if audio is None and video is None and (spec.video or not probe(record.path).has_video):
        raise MediaError(f"no audio or video stream in {record.path}")
    if audio is not None and audio.size == 0:
        raise MediaError(f"no decodable audio in {record.path}")
    frames = times = None
    if video is not None:
        raw, times = video
        frames = np.stack([preprocess_frame(rgb, spec.frames) for rgb in raw])
    return Clip(record=record, audio=audio, frames=frames, frame_times=times)


def default_cache_dir() -> Path:
    """The user cache's decoded/ folder (streamrec.core.assets.user_cache_dir)."""
    return user_cache_dir() / "decoded"


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    # A reader sees the old file or the complete new one, never a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ClipCache:
    """On-disk cache of decoded clips, one folder per clip holding audio.npy, frames.npy, times.npy.

    An entry is keyed by the sha1 of the file's resolved path, size and mtime_ns and of the
    DecodeSpec, so editing or replacing a file, or decoding it differently, misses the cache.
    meta.json is written last and marks an entry complete. Failures are never cached. Nothing is
    evicted: delete the folder to reclaim space.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self._write_failed = False

    def key(self, record: ClipRecord, spec: DecodeSpec) -> str | None:
        """The cache key of a clip, or None when its file cannot be stat'ed."""
        try:
            st = record.path.stat()
            resolved = record.path.resolve()
        except OSError:
            return None
        identity = {
            "format": CACHE_FORMAT,
            "path": str(resolved),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "spec": spec.to_dict(),
        }
        return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def get(self, record: ClipRecord, spec: DecodeSpec) -> Clip | None:
        """The cached clip, or None on a miss (or a damaged entry, which is logged)."""
        key = self.key(record, spec)
        if key is None:
            return None
        entry = self._entry(key)
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
            audio = np.load(entry / "audio.npy") if meta["audio"] else None
            frames = times = None
            if meta["video"]:
                frames = np.load(entry / "frames.npy")
                times = np.load(entry / "times.npy")
                if len(frames) != len(times):
                    raise ValueError(f"{len(frames)} frames but {len(times)} times")
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring damaged cache entry %s (%s); decoding %s again", entry, e, record.rel_path)
            return None
        return Clip(record=record, audio=audio, frames=frames, frame_times=times)

    def put(self, clip: Clip, spec: DecodeSpec) -> bool:
        """Stores a decoded clip. Returns False, with one warning per cache, when it cannot be written."""
        key = self.key(clip.record, spec)
        if key is None:
            return False
        entry = self._entry(key)
        arrays = {"audio": clip.audio, "frames": clip.frames, "times": clip.frame_times}
        meta = {
            "audio": clip.audio is not None,
            "video": clip.frames is not None,
            "path": str(clip.record.path),
            "spec": spec.to_dict(),
        }
        try:
            entry.mkdir(parents=True, exist_ok=True)
            for name, array in arrays.items():
                if array is not None:
                    _atomic_write(entry / f"{name}.npy", lambda fh, a=array: np.save(fh, a, allow_pickle=False))
            _atomic_write(entry / "meta.json", lambda fh: fh.write(json.dumps(meta).encode()))
        except OSError as e:
            if not self._write_failed:
                log.warning("cannot write the decode cache %s (%s); clips will be decoded again", self.directory, e)
            self._write_failed = True
            return False
        return True


def _decode_and_store(record: ClipRecord, spec: DecodeSpec, cache: ClipCache) -> Clip | str | None:
    """Decodes a clip into the cache. Returns None when it was stored (read it back with cache.get,
    so a worker pickles no arrays), the clip itself when it could not be stored, or the MediaError
    message. Runs in the loading process or in a worker."""
    try:
        clip = decode_clip(record, spec)
    except MediaError as e:
        return str(e)
    return None if cache.put(clip, spec) else clip


def _init_worker() -> None:
    # Each worker decodes one clip at a time; torch's own thread pool would oversubscribe the cores.
    torch.set_num_threads(1)


def _outcome(record: ClipRecord, outcome: Clip | str | None, spec: DecodeSpec, cache: ClipCache) -> Clip | str:
    """The clip a _decode_and_store outcome stands for: read back from the cache when it was stored."""
    if outcome is not None:
        return outcome
    clip = cache.get(record, spec)
    if clip is not None:
        return clip
    try:  # the entry vanished meanwhile: decode here without the cache
        return decode_clip(record, spec)
    except MediaError as e:
        return str(e)


@contextmanager
def _progress_bar(enabled: bool, description: str, total: int) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def _decode_parallel(
    records: list[ClipRecord],
    misses: list[int],
    spec: DecodeSpec,
    cache: ClipCache,
    workers: int,
    results: list[Clip | str | None],
    advance: Callable[[], None],
) -> None:
    # spawn, not fork: forking a process whose torch/OpenMP threads have already run can deadlock.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(misses)), mp_context=context, initializer=_init_worker)
    unstored = False
    try:
        futures: dict[Future, int] = {pool.submit(_decode_and_store, records[i], spec, cache): i for i in misses}
        for future in as_completed(futures):
            i = futures[future]
            outcome = future.result()
            if isinstance(outcome, Clip) and not unstored:
                # The worker's warning went to its own process's log; say it once here.
                log.warning("cannot write the decode cache %s; clips will be decoded again", cache.directory)
                unstored = True
            results[i] = _outcome(records[i], outcome, spec, cache)
            advance()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def load_dataset(
    root: str | os.PathLike[str],
    split: str | Sequence[str] | None = None,
    spec: DecodeSpec = DecodeSpec(),
    classes: Sequence[str] = DEFAULT_CLASSES,
    cache: ClipCache | None = None,
    workers: int = 1,
    progress: bool = True,
) -> LoadedDataset:
    """Reads labels.csv and decodes every clip of the wanted split(s) through the cache.

    `split` is a split name, a comma-separated string or a sequence of names (None = all). Cache
    hits are not decoded; with workers > 1 the misses are decoded in that many processes. Clips are
    returned in labels.csv order; a row whose file fails to decode is skipped with the MediaError
    message as reason. Raises DatasetError when the dataset cannot be read at all.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    root_path = _dataset_root(root)
    class_names = _check_classes(classes)
    records, skipped = read_labels(root_path, class_names, _check_splits(split))
    cache = cache if cache is not None else ClipCache()

    results: list[Clip | str | None] = [None] * len(records)
    with _progress_bar(progress, f"decoding {root_path}", len(records)) as advance:
        misses: list[int] = []
        for i, record in enumerate(records):
            results[i] = cache.get(record, spec)
            if results[i] is None:
                misses.append(i)
            else:
                advance()
        log.debug("%d of %d clips found in the cache %s", len(records) - len(misses), len(records), cache.directory)
        if workers > 1 and len(misses) > 1:
            _decode_parallel(records, misses, spec, cache, workers, results, advance)
        else:
            for i in misses:
                results[i] = _outcome(records[i], _decode_and_store(records[i], spec, cache), spec, cache)
                advance()

    clips: list[Clip] = []
    for record, outcome in zip(records, results):
        if isinstance(outcome, Clip):
            clips.append(outcome)
        else:
            skipped.append(Skipped(record.rel_path, str(outcome), record.line))
    for item in skipped:
        where = f" (labels.csv line {item.line})" if item.line is not None else ""
        log.warning("skipped %s%s: %s", item.path, where, item.reason)
    log.info("%d clips, %d skipped", len(clips), len(skipped))
    return LoadedDataset(root=root_path, classes=class_names, clips=clips, skipped=skipped)
