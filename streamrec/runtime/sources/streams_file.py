"""A streams file (`streamrec run --streams FILE`) and its split between hosts (`--shard K/N`).

One source per line, as `streamrec run` takes it (file, URL, camera:N, mic:[DEVICE]), optionally followed
by its stream id; blank lines and `#` comments are ignored; words are split as a shell does, so quote a
path with spaces. Relative paths are relative to the streams file's folder (as in a playlist).

Every host reads the same file. Stream ids are assigned over the whole file (explicit ones as given,
derived ones by the same rules as `streamrec run`'s arguments), so a stream has the same id, and thus the
same MQTT topics, whichever host runs it. Which host runs a line is decided by rendezvous hashing of its
stream id (its source when it has no explicit id): it depends on neither the line's position nor the
other lines, and going from N to N + 1 hosts moves only about 1 / (N + 1) of the streams.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from streamrec.core.errors import UserError
from streamrec.runtime.sources import SourceError, SourceSpec, assign_stream_ids, parse_source

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """This host's part of a streams file: number `index` (1-based) of `count` hosts."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"a shard K/N needs 1 <= K <= N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """K/N text -> Shard; ValueError with a sentence otherwise."""
        match = _SHARD.match(text)
        if match is None:
            raise ValueError(f"expected K/N (this host's number K of N hosts, e.g. 2/4), got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(key: str, count: int) -> int:
    """The shard (1..count) of a stream key: the one with the highest hash of (shard, key), rendezvous
    hashing. blake2b, not hash(): Python salts str hashes per process, and every host must agree."""
    return max(range(1, count + 1), key=lambda k: hashlib.blake2b(f"{k}/{key}".encode(), digest_size=8).digest())


@dataclass(frozen=True)
class StreamLine:
    """One source line of a streams file."""

    line: int  # 1-based line number, for messages
    source: str
    stream_id: str | None  # None: derived from the source

    @property
    def key(self) -> str:
        """What decides the line's shard: its stream id, or its source without one."""
        return self.stream_id or self.source


def parse_streams(text: str, name: str = "<streams>") -> list[StreamLine]:
    """The source lines of a streams file's text; UserError naming `name:LINE` for a malformed line."""
    lines: list[StreamLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as e:  # an unclosed quote
            raise UserError(f"{name}:{number}: {e}") from None
        if not words:
            continue
        if len(words) > 2:
            raise UserError(
                f"{name}:{number}: expected SOURCE [STREAM_ID], got {len(words)} words (quote a path with spaces)"
            )
        stream_id = words[1] if len(words) == 2 else None
        if stream_id is not None:
            if stream_id in seen:
                raise UserError(f"{name}:{number}: stream id {stream_id} is already used on line {seen[stream_id]}")
            seen[stream_id] = number
        lines.append(StreamLine(number, words[0], stream_id))
    return lines


def read_streams_file(
    path: Path, shard: Shard | None = None, realtime: bool | None = None
) -> tuple[list[SourceSpec], int]:
    """The sources of a streams file that this host runs (all of them without a shard), each with its stream
    id fixed, and the number of sources in the whole file. UserError (one line) for an unreadable or
    malformed file, a missing media file of this host's share, or a share without streams."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the streams file {path}: {getattr(e, 'strerror', None) or e}") from e
    lines = parse_streams(text, str(path))
    if not lines:
        raise UserError(f"the streams file {path} lists no sources")
    specs = []
    for line in lines:
        try:
            spec = parse_source(line.source, line.stream_id, realtime, must_exist=False)
        except ValueError as e:  # a stream id that breaks the rules
            raise UserError(f"{path}:{line.line}: {e}") from None
        if spec.kind == "file" and not Path(spec.target).is_absolute():
            spec = SourceSpec("file", str(path.parent / spec.target), spec.stream_id, realtime)
        specs.append(spec)
    ids = assign_stream_ids(specs)  # over the whole file: the same id on every host
    chosen = []
    for line, spec, stream_id in zip(lines, specs, ids):
        if shard is not None and not shard.owns(line.key):
            continue
        if spec.kind == "file" and not Path(spec.target).is_file():
            raise SourceError(f"{path}:{line.line}: no such media file: {spec.target}")
        chosen.append(SourceSpec(spec.kind, spec.target, stream_id, spec.realtime, spec.fps))
    if not chosen:
        raise UserError(f"shard {shard} of {path} gets no stream (the file lists {len(lines)}): use fewer shards")
    return chosen, len(lines)
