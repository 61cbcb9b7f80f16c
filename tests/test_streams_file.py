"""Streams files (`streamrec run --streams FILE`) and their deterministic split between hosts (`--shard K/N`)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from streamrec.core.errors import UserError
from streamrec.runtime.sources.streams_file import Shard, parse_streams, read_streams_file, shard_of

pytestmark = pytest.mark.timeout(120)


def test_lines_comments_quotes_and_ids() -> None:
    text = (
        "# cameras of hall A\n"
        "\n"
        "rtsp://10.0.0.11/stream1 cam-011   # the stage\n"
        "   http://example.org/live.m3u8\n"
        "'clips/my clip.mp4' rehearsal\n"
    )
    lines = parse_streams(text, "hall.txt")
    assert [(x.line, x.source, x.stream_id) for x in lines] == [
        (3, "rtsp://10.0.0.11/stream1", "cam-011"),
        (4, "http://example.org/live.m3u8", None),
        (5, "clips/my clip.mp4", "rehearsal"),
    ]
    assert [x.key for x in lines] == ["cam-011", "http://example.org/live.m3u8", "rehearsal"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.mp4 one two\n", "hall.txt:1: expected SOURCE [STREAM_ID], got 3 words"),
        ("\n'unclosed.mp4\n", "hall.txt:2: No closing quotation"),
        ("rtsp://h/1 cam\nrtsp://h/2 cam\n", "hall.txt:2: stream id cam is already used on line 1"),
    ],
)
def test_malformed_lines_are_named_by_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        parse_streams(text, "hall.txt")


@pytest.mark.parametrize(("text", "shard"), [("1/1", Shard(1, 1)), ("2/4", Shard(2, 4)), (" 4 / 4 ", Shard(4, 4))])
def test_shard_parsing(text: str, shard: Shard) -> None:
    assert Shard.parse(text) == shard


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "2", "a/b", "-1/4", "1/4/2", ""])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Shard.parse(text)


def test_the_split_is_a_partition_that_every_host_computes_alike_and_that_moves_little() -> None:
    keys = [f"cam-{i:03d}" for i in range(400)]
    # Pinned values: hosts running different builds must agree, so the hash must never change silently.
    assert [shard_of(k, 4) for k in keys[:8]] == [2, 3, 2, 2, 2, 3, 4, 2]
    owners = {k: shard_of(k, 4) for k in keys}
    shards = [Shard(k, 4) for k in range(1, 5)]
    assert all(sum(s.owns(k) for s in shards) == 1 for k in keys)  # each stream on exactly one host
    assert all(70 <= list(owners.values()).count(i) <= 130 for i in range(1, 5))  # about 100 each
    # a fifth host takes about a fifth of the streams and moves nothing else
    moved = [k for k in keys if shard_of(k, 5) != owners[k]]
    assert all(shard_of(k, 5) == 5 for k in moved)
    assert 50 <= len(moved) <= 110


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def shares(path: Path, count: int) -> list[set[tuple[str, str]]]:
    result = []
    for k in range(1, count + 1):
        try:
            specs, _ = read_streams_file(path, Shard(k, count))
        except UserError:  # an empty share
            specs = []
        result.append({(str(s.stream_id), s.target) for s in specs})
    return result


def test_shares_do_not_depend_on_line_order_and_ids_are_assigned_over_the_whole_file(tmp_path: Path) -> None:
    lines = [f"rtsp://10.0.{i // 250}.{i % 250}/s cam{i}" for i in range(40)] + [
        f"rtsp://10.1.0.{i}/s" for i in range(6)
    ]
    first = shares(write(tmp_path / "a.txt", lines), 3)
    shuffled = lines[:40]
    random.Random(1).shuffle(shuffled)
    second = shares(write(tmp_path / "b.txt", shuffled + lines[40:]), 3)
    assert first == second
    everything = set().union(*first)
    assert len(everything) == 46 and sum(map(len, first)) == 46
    # sources without an id get the ids the whole file gives them (url0..url5), on whichever host runs them
    assert {i for i, _ in everything if i.startswith("url")} == {f"url{i}" for i in range(6)}


def test_relative_paths_and_missing_files_only_matter_to_the_host_that_runs_them(
    tmp_path: Path, runtime_clips: Path
) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "av.mp4").write_bytes((runtime_clips / "av.mp4").read_bytes())
    path = write(tmp_path / "streams.txt", ["clips/av.mp4 here", "/nowhere/gone.mp4 away"])
    here, away = shard_of("here", 2), shard_of("away", 2)
    assert here != away  # the two ids fall on different shards: the test relies on it
    specs, total = read_streams_file(path, Shard(here, 2))
    assert total == 2
    assert [(s.kind, s.target, s.stream_id) for s in specs] == [("file", str(tmp_path / "clips" / "av.mp4"), "here")]
    with pytest.raises(UserError, match=r"streams.txt:2: no such media file: /nowhere/gone.mp4"):
        read_streams_file(path, Shard(away, 2))
    with pytest.raises(UserError, match=r"gets no stream \(the file lists 1\)"):
        read_streams_file(write(tmp_path / "one.txt", ["clips/av.mp4 here"]), Shard(away, 2))
    with pytest.raises(UserError, match="lists no sources"):
        read_streams_file(write(tmp_path / "empty.txt", ["# nothing yet"]))
    with pytest.raises(UserError, match="cannot read the streams file"):
        read_streams_file(tmp_path / "absent.txt")
    with pytest.raises(UserError, match=r"bad.txt:1: stream id 'a b\?'"):
        read_streams_file(write(tmp_path / "bad.txt", ["rtsp://h/1 'a b?'"]))


@pytest.mark.slow  # two runs of the runtime, a few seconds each on 2 busy cores
def test_two_hosts_run_the_file_between_them(tmp_path: Path, runtime_bundle: Path, runtime_clips: Path, streamrec_cli):
    ids = ["alpha", "bravo", "charlie", "delta"]
    path = write(tmp_path / "streams.txt", [f"{runtime_clips / 'short.wav'} {i}" for i in ids])  # 0.4 s each
    common = ("--model", str(runtime_bundle), "--backend", "torch", "--no-view", "--streams", str(path))
    ran = []
    for k in (1, 2):
        out = tmp_path / f"host{k}.jsonl"
        assert streamrec_cli("run", *common, "--shard", f"{k}/2", "--jsonl", str(out)) == 0
        ran.append({json.loads(line)["stream"] for line in out.read_text().splitlines()})
    assert ran[0] | ran[1] == set(ids) and not ran[0] & ran[1]
    assert ran[0] == {i for i in ids if shard_of(i, 2) == 1} and ran[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3/2"], "--shard: a shard K/N needs 1 <= K <= N, got 3/2"),
        (["--shard", "two"], "--shard: expected K/N"),
    ],
)
def test_shard_errors_are_one_line_exit_2(
    tmp_path: Path, runtime_clips: Path, streamrec_cli, capsys, args: list[str], message: str
) -> None:
    path = write(tmp_path / "streams.txt", [str(runtime_clips / "av.mp4")])
    assert streamrec_cli("run", "--no-view", "--streams", str(path), *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_shard_needs_a_streams_file(runtime_clips: Path, streamrec_cli, capsys) -> None:
    assert streamrec_cli("run", str(runtime_clips / "av.mp4"), "--no-view", "--shard", "1/2") == 2
    err = capsys.readouterr().err.strip()
    assert "--shard needs --streams FILE" in err and len(err.splitlines()) == 1
