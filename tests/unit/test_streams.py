"""circus.streams: the stream classes, build_stream and OutputRing, on real files."""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from circus.streams import (
    BUILTIN_STREAMS,
    FancyStdoutStream,
    FileStream,
    OutputRing,
    QueueStream,
    StderrStream,
    StdoutStream,
    Stream,
    StreamConfigError,
    SyslogStream,
    TimedRotatingFileStream,
    WatchedFileStream,
    build_stream,
)
from circus.streams.base import CARRY_LIMIT, LinePrefixer
from tests.conftest import wait_until


class FakeClock:
    """A settable wall clock for the time-driven streams."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chunk(data: bytes, pid: int = 42, name: str = "stdout") -> dict[str, Any]:
    return {"data": data, "pid": pid, "name": name}


def numbered_lines(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [b"line %06d %s\n" % (i, b"x" * rng.randrange(0, 40)) for i in range(count)]


def random_chunks(data: bytes, rng: random.Random, biggest: int = 70_000) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        size = rng.choice((rng.randrange(1, 64), rng.randrange(1, 4096), rng.randrange(1, biggest)))
        yield data[pos : pos + size]
        pos += size


def size_backups(path: Path) -> list[Path]:
    """``file.N`` … ``file.1`` (oldest first), then ``file``."""
    backups = sorted(
        (p for p in path.parent.iterdir() if re.fullmatch(re.escape(path.name) + r"\.\d+", p.name)),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    return [*backups, path]


# -- FileStream ------------------------------------------------------------------------------


def test_file_stream_appends_and_flushes_each_call(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"old\n")
    stream = FileStream(str(path))
    stream(chunk(b"partial"))
    assert path.read_bytes() == b"old\npartial"  # visible at once, no line buffering
    stream(chunk(b" line\n", name="stderr"))
    assert path.read_bytes() == b"old\npartial line\n"
    stream.close()


def test_file_stream_without_filename_uses_a_temp_file() -> None:
    stream = FileStream()
    try:
        stream(chunk(b"hello\n"))
        assert os.path.basename(stream.filename).startswith("circus-")
        assert Path(stream.filename).read_bytes() == b"hello\n"
    finally:
        stream.close()
        os.unlink(stream.filename)


def test_file_stream_relative_path_is_fixed_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stream = FileStream("rel.log")
    monkeypatch.chdir("/")
    stream(chunk(b"x\n"))
    stream.close()
    assert (tmp_path / "rel.log").read_bytes() == b"x\n"


def test_size_rotation_keeps_every_line_once_in_order(tmp_path: Path) -> None:
    """100,000 lines in random chunks: the files, oldest first, are the output, cut at lines."""
    path = tmp_path / "big.log"
    lines = numbered_lines(100_000)
    data = b"".join(lines)
    max_bytes = 64 * 1024
    stream = FileStream(str(path), max_bytes=max_bytes, backup_count=1000)
    for piece in random_chunks(data, random.Random(7)):
        stream(chunk(piece))
    stream.close()

    files = size_backups(path)
    assert len(files) > 20
    contents = [f.read_bytes() for f in files]
    assert b"".join(contents) == data
    for content in contents[:-1]:
        assert content.endswith(b"\n")  # no line cut across files
        assert len(content) <= max_bytes
        assert len(content) > max_bytes - 100  # and the files are used nearly full


def test_size_rotation_with_time_format_keeps_lines_of_each_process(tmp_path: Path) -> None:
    """Two processes interleave chunks; every line is whole, prefixed, in order per pid."""
    path = tmp_path / "prefixed.log"
    max_bytes = 64 * 1024
    stream = FileStream(str(path), "65536", "1000", time_format="%H:%M:%S")
    rng = random.Random(3)
    per_pid = {pid: numbered_lines(50_000, seed=pid) for pid in (101, 202)}
    feeds = {pid: random_chunks(b"".join(lines), rng) for pid, lines in per_pid.items()}
    while feeds:
        pid = rng.choice(list(feeds))
        piece = next(feeds[pid], None)
        if piece is None:
            del feeds[pid]
        else:
            stream(chunk(piece, pid=pid, name="stdout" if pid == 101 else "stderr"))
    stream.close()

    files = size_backups(path)
    contents = [f.read_bytes() for f in files]
    for content in contents[:-1]:
        assert content.endswith(b"\n")
        assert len(content) <= max_bytes
    seen: dict[int, list[bytes]] = {101: [], 202: []}
    prefix = re.compile(rb"^\d\d:\d\d:\d\d \[(\d+)\] \| (.*)$")
    for line in b"".join(contents).split(b"\n")[:-1]:
        match = prefix.match(line)
        assert match, line
        seen[int(match.group(1))].append(match.group(2) + b"\n")
    assert seen == per_pid


def test_a_line_longer_than_max_bytes_is_never_split(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    stream = FileStream(str(path), max_bytes=100, backup_count=10)
    stream(chunk(b"short\n"))
    long_line = b"y" * 250 + b"\n"
    stream(chunk(long_line[:120]))
    stream(chunk(long_line[120:] + b"after\n"))
    stream.close()
    files = [f.read_bytes() for f in size_backups(path)]
    assert files == [b"short\n", long_line, b"after\n"]


def test_rotation_finishes_a_line_left_open_in_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "open.log"
    path.write_bytes(b"a" * 90)  # an unfinished line from an earlier run
    stream = FileStream(str(path), max_bytes=100, backup_count=2)
    stream(chunk(b"bbbbbbbbbbbbbbbbbbbb\nnext\n"))
    stream.close()
    assert [f.read_bytes() for f in size_backups(path)] == [
        b"a" * 90 + b"b" * 20 + b"\n",
        b"next\n",
    ]


def test_rotation_keeps_backup_count_files(tmp_path: Path) -> None:
    path = tmp_path / "few.log"
    stream = FileStream(str(path), max_bytes=10, backup_count=3)
    for i in range(10):
        stream(chunk(b"%09d\n" % i))
    stream.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "few.log",
        "few.log.1",
        "few.log.2",
        "few.log.3",
    ]
    assert [f.read_bytes() for f in size_backups(path)] == [b"%09d\n" % i for i in range(6, 10)]


def test_max_bytes_without_backup_count_just_grows(tmp_path: Path) -> None:
    path = tmp_path / "grow.log"
    stream = FileStream(str(path), max_bytes="10", backup_count="0")
    for _ in range(5):
        stream(chunk(b"0123456789\n"))
    stream.close()
    assert os.listdir(tmp_path) == ["grow.log"]
    assert path.stat().st_size == 55


def test_max_bytes_accepts_sizes(tmp_path: Path) -> None:
    stream = FileStream(str(tmp_path / "s.log"), max_bytes="64K", backup_count="2")
    assert stream.max_bytes == 64 * 1024
    stream.close()


def test_time_format_prefixes_only_line_starts(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    clock = FakeClock(datetime(2024, 5, 6, 7, 8, 9).timestamp())
    stream = FileStream(str(path), time_format="%Y-%m-%d %H:%M:%S", _clock=clock)
    stream(chunk(b"hel", pid=1))
    stream(chunk(b"other\n", pid=2))
    stream(chunk(b"lo\nwor", pid=1))
    assert path.read_bytes() == (
        b"2024-05-06 07:08:09 [2] | other\n2024-05-06 07:08:09 [1] | hello\n"
    )
    stream.close()  # the held "wor" is written out, ended
    assert path.read_bytes().endswith(b"2024-05-06 07:08:09 [1] | wor\n")


def test_write_after_close_still_lands(tmp_path: Path) -> None:
    path = tmp_path / "late.log"
    stream = FileStream(str(path))
    stream.close()
    stream(chunk(b"late\n"))  # a pump draining a dead child's pipe
    assert path.read_bytes() == b"late\n"
    stream.close()


def test_failed_rotation_keeps_appending_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "stuck.log"
    stream = FileStream(str(path), max_bytes=10, backup_count=2)

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("circus.streams.files.os.replace", refuse)
    with caplog.at_level(logging.WARNING, logger="circus.streams"):
        for i in range(5):
            stream(chunk(b"%09d\n" % i))
    stream.close()
    assert path.read_bytes() == b"".join(b"%09d\n" % i for i in range(5))
    assert caplog.text.count("could not rotate") == 1


def test_threads_sharing_a_rotating_stream(tmp_path: Path) -> None:
    path = tmp_path / "shared.log"
    stream = FileStream(str(path), max_bytes=4096, backup_count=500, time_format="%S")
    per_pid = {pid: numbered_lines(2000, seed=pid) for pid in range(1, 5)}

    def feed(pid: int) -> None:
        for piece in random_chunks(b"".join(per_pid[pid]), random.Random(pid), biggest=300):
            stream(chunk(piece, pid=pid))

    threads = [threading.Thread(target=feed, args=(pid,)) for pid in per_pid]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    stream.close()
    seen: dict[int, list[bytes]] = {pid: [] for pid in per_pid}
    for line in b"".join(f.read_bytes() for f in size_backups(path)).splitlines():
        match = re.fullmatch(rb"\d\d \[(\d)\] \| (.*)", line)
        assert match, line
        seen[int(match.group(1))].append(match.group(2) + b"\n")
    assert seen == per_pid


def test_file_stream_bad_values_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        FileStream(str(tmp_path / "x.log"), max_bytes="lots", backup_count=1)
    with pytest.raises(ValueError, match="backup_count"):
        FileStream(str(tmp_path / "x.log"), backup_count=-1)
    with pytest.raises(ValueError, match="filename"):
        FileStream(str(tmp_path / "missing-dir" / "x.log"))


# -- WatchedFileStream ---------------------------------------------------------------------------


def test_watched_file_stream_reopens_after_rename(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    clock = FakeClock()
    stream = WatchedFileStream(str(path), _clock=clock)
    stream(chunk(b"one\n"))
    os.rename(path, tmp_path / "w.log.1")  # what logrotate does
    stream(chunk(b"two\n"))  # checked at most once a second: still the moved file
    assert not path.exists()
    clock.advance(1.5)
    stream(chunk(b"three\n"))
    stream.close()
    assert (tmp_path / "w.log.1").read_bytes() == b"one\ntwo\n"
    assert path.read_bytes() == b"three\n"


def test_watched_file_stream_reopens_after_delete_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    stream = WatchedFileStream(str(path), check_interval="0")
    stream(chunk(b"one\n"))
    path.unlink()
    stream(chunk(b"two\n"))
    assert path.read_bytes() == b"two\n"
    path.unlink()
    path.write_bytes(b"someone else's\n")
    stream(chunk(b"three\n"))
    stream.close()
    assert path.read_bytes() == b"someone else's\nthree\n"


def test_watched_file_stream_with_real_clock(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    stream = WatchedFileStream(str(path), check_interval=0.05)
    stream(chunk(b"one\n"))
    os.rename(path, tmp_path / "moved")

    def reopened() -> bool:
        stream(chunk(b"x\n"))
        return path.exists()

    wait_until(reopened, what="the stream to reopen its file")
    stream.close()
    assert (tmp_path / "moved").read_bytes().startswith(b"one\n")


def test_watched_file_stream_requires_a_filename() -> None:
    with pytest.raises(ValueError, match="filename"):
        WatchedFileStream("")


# -- TimedRotatingFileStream ---------------------------------------------------------------------


def test_timed_rotation_every_second(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    start = datetime(2024, 1, 2, 3, 4, 5).timestamp()
    clock = FakeClock(start)
    stream = TimedRotatingFileStream(str(path), rotate_when="S", rotate_interval=1, _clock=clock)
    stream(chunk(b"a1\na2\n"))
    clock.advance(0.5)
    stream(chunk(b"a3\n"))
    clock.advance(0.6)
    stream(chunk(b"b1\n"))
    clock.advance(2.2)
    stream(chunk(b"c1\n"))
    stream.close()
    assert (tmp_path / "t.log.20240102030405").read_bytes() == b"a1\na2\na3\n"
    assert (tmp_path / "t.log.20240102030406").read_bytes() == b"b1\n"
    assert path.read_bytes() == b"c1\n"
    assert stream.backups() == [
        str(tmp_path / "t.log.20240102030405"),
        str(tmp_path / "t.log.20240102030406"),
    ]


def test_timed_rotation_waits_for_the_end_of_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    clock = FakeClock(datetime(2024, 1, 2, 3, 4, 5).timestamp())
    stream = TimedRotatingFileStream(str(path), rotate_when="s", _clock=clock)
    stream(chunk(b"first\nhalf"))
    clock.advance(1)
    stream(chunk(b"way"))  # due, but the line is still open
    assert path.read_bytes() == b"first\nhalfway"
    stream(chunk(b" done\nsecond\n"))
    stream.close()
    assert (tmp_path / "t.log.20240102030405").read_bytes() == b"first\nhalfway done\n"
    assert path.read_bytes() == b"second\n"


def test_timed_rotation_many_lines_and_backup_count(tmp_path: Path) -> None:
    """Lines arrive in random chunks over ~80 fake seconds: all kept, whole, oldest deleted."""
    path = tmp_path / "t.log"
    clock = FakeClock(datetime(2024, 1, 2, 3, 4, 5).timestamp())
    stream = TimedRotatingFileStream(
        str(path), backup_count="100", rotate_when="S", time_format="%S", _clock=clock
    )
    lines = numbered_lines(20_000)
    rng = random.Random(5)
    for piece in random_chunks(b"".join(lines), rng, biggest=8000):
        stream(chunk(piece))
        clock.advance(0.25)
    stream.close()
    files = [Path(p) for p in stream.backups()] + [path]
    assert 50 < len(files) <= 101
    body = b"".join(f.read_bytes() for f in files)
    assert [re.sub(rb"^\d\d \[42\] \| ", b"", line) + b"\n" for line in body.splitlines()] == lines

    stream = TimedRotatingFileStream(str(path), backup_count=3, rotate_when="S", _clock=clock)
    for _ in range(5):
        clock.advance(1)
        stream(chunk(b"more\n"))
    stream.close()
    assert len(stream.backups()) == 3


def test_timed_rotation_of_a_file_left_by_an_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    path.write_bytes(b"old\n")
    clock = FakeClock(datetime(2024, 1, 2, 3, 4, 5).timestamp())
    os.utime(path, (clock.now - 7200, clock.now - 7200))  # last written two hours ago
    stream = TimedRotatingFileStream(str(path), rotate_when="H", _clock=clock)
    stream(chunk(b"new\n"))
    stream.close()
    assert (tmp_path / "t.log.2024010201").read_bytes() == b"old\n"
    assert path.read_bytes() == b"new\n"


def test_timed_rotation_options_accept_any_case_and_real_booleans(tmp_path: Path) -> None:
    path = str(tmp_path / "t.log")

    def built(**kwargs: Any) -> TimedRotatingFileStream:
        stream = TimedRotatingFileStream(path, **kwargs)
        stream.close()
        return stream

    assert [built(rotate_when=w).rotate_when for w in ("midnight", "Midnight", "w0", "h", "D")] == [
        "MIDNIGHT",
        "MIDNIGHT",
        "W0",
        "H",
        "D",
    ]
    assert built(utc="False").utc is False  # bug 5: bool("False") meant UTC
    assert built(utc="true").utc is True
    assert built().rotate_when == "H"
    with pytest.raises(ValueError, match="rotate_when"):
        TimedRotatingFileStream(path, rotate_when="fortnight")
    with pytest.raises(ValueError, match="utc"):
        TimedRotatingFileStream(path, utc="maybe")
    with pytest.raises(ValueError, match="rotate_interval"):
        TimedRotatingFileStream(path, rotate_interval="0")


def test_timed_rotation_times(tmp_path: Path) -> None:
    path = str(tmp_path / "t.log")
    wednesday = datetime(2024, 5, 8, 15, 30).timestamp()  # a Wednesday

    def first_rollover(**kwargs: Any) -> datetime:
        stream = TimedRotatingFileStream(path, _clock=FakeClock(wednesday), **kwargs)
        stream.close()
        os.unlink(path)
        return datetime.fromtimestamp(stream._rollover_at)

    assert first_rollover(rotate_when="M", rotate_interval=5) == datetime(2024, 5, 8, 15, 35)
    assert first_rollover(rotate_when="H") == datetime(2024, 5, 8, 16, 30)
    assert first_rollover(rotate_when="MIDNIGHT") == datetime(2024, 5, 9)
    assert first_rollover(rotate_when="MIDNIGHT", rotate_interval=2) == datetime(2024, 5, 10)
    assert first_rollover(rotate_when="W0") == datetime(2024, 5, 13)  # next Monday
    assert first_rollover(rotate_when="W2") == datetime(2024, 5, 15)  # next Wednesday
    assert first_rollover(rotate_when="W3") == datetime(2024, 5, 9)


def test_timed_rotation_names_use_the_unit(tmp_path: Path) -> None:
    start = datetime(2024, 1, 2, 3, 4, 5).timestamp()
    for when, seconds, suffix in (
        ("M", 60, "202401020304"),
        ("H", 3600, "2024010203"),
        ("D", 86400, "20240102"),
        ("midnight", 86400, "20240102"),
    ):
        clock = FakeClock(start)
        path = tmp_path / when / "t.log"
        path.parent.mkdir()
        stream = TimedRotatingFileStream(str(path), rotate_when=when, _clock=clock)
        stream(chunk(b"x\n"))
        clock.advance(seconds)
        stream(chunk(b"y\n"))
        stream.close()
        assert sorted(os.listdir(path.parent)) == ["t.log", f"t.log.{suffix}"], when


# -- console streams -----------------------------------------------------------------------------


def test_stdout_stream_writes_whole_lines(capfd: pytest.CaptureFixture[str]) -> None:
    """Each (pid, pipe) has its own unfinished line: stderr's whole line goes out at once,
    stdout's waits for its end (here: close, which ends it with a newline)."""
    stream = StdoutStream()
    stream(chunk(b"no newline yet"))
    stream(chunk(b" - now\n", name="stderr"))
    assert capfd.readouterr() == (" - now\n", "")
    stream(chunk(b", still none"))
    stream.close()
    out, err = capfd.readouterr()
    assert out == "no newline yet, still none\n"
    assert err == ""


def test_stderr_stream_writes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    stream = StderrStream()
    stream(chunk(b"one\ntw", pid=3))
    stream(chunk(b"o\n", pid=3))
    stream.close()
    assert capfd.readouterr() == ("", "one\ntwo\n")


def test_console_line_let_out_early_stays_its_process_s(
        capfd: pytest.CaptureFixture[str]) -> None:
    """flush_due writes a line held FLUSH_DELAY without its end; its rest continues it
    unprefixed, unless another process wrote meanwhile: that first ends it."""
    stream = StdoutStream(prefix=True, tag="w")
    stream({"data": b"ask: ", "pid": 5, "name": "stdout", "wid": 1})
    deadline = stream.flush_deadline()
    assert deadline is not None
    stream.flush_due(deadline - 0.1)
    assert capfd.readouterr().out == ""
    stream.flush_due(deadline)
    assert stream.flush_deadline() is None
    assert re.fullmatch(r"w\.1 *\| ask: ", capfd.readouterr().out)
    stream({"data": b"yes\nmore", "pid": 5, "name": "stdout", "wid": 1})
    assert capfd.readouterr().out == "yes\n"
    stream.flush_due(time.monotonic() + 1)
    stream({"data": b"other\n", "pid": 6, "name": "stdout", "wid": 2})
    stream({"data": b" rest\n", "pid": 5, "name": "stdout", "wid": 1})
    out = capfd.readouterr().out
    assert re.fullmatch(r"(w\.1 *\| )more\nw\.2 *\| other\n\1 rest\n", out), out
    stream.close()
    assert capfd.readouterr().out == ""


def test_console_exit_ends_the_lines_of_that_process_only(
        capfd: pytest.CaptureFixture[str]) -> None:
    stream = StdoutStream()
    stream(chunk(b"cut", pid=1))
    stream(chunk(b"off", pid=1, name="stderr"))
    stream(chunk(b"kept", pid=2))
    stream.process_exited(1)
    assert capfd.readouterr().out == "cut\noff\n"
    stream.close()
    assert capfd.readouterr().out == "kept\n"


def test_fancy_stdout_stream_colours_whole_lines(capfd: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    clock = FakeClock(datetime(2024, 5, 6, 7, 8, 9).timestamp())
    stream = FancyStdoutStream(color="red", time_format="%H:%M:%S", _clock=clock)
    stream(chunk(b"hello\nwor", pid=7))
    assert capfd.readouterr().out == "\033[0;31m07:08:09 [7] | hello\n\033[0m"
    stream(chunk(b"ld\n", pid=7))
    assert capfd.readouterr().out == "\033[0;31m07:08:09 [7] | world\n\033[0m"
    stream(chunk(b"unfinished", pid=7))
    stream.close()
    assert capfd.readouterr().out == "\033[0;31m07:08:09 [7] | unfinished\n\033[0m"


def test_fancy_stdout_stream_colour_per_process(capfd: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream = FancyStdoutStream()
    assert stream.color_code(1) != stream.color_code(2)
    assert stream.color_code(1) == stream.color_code(1)
    stream(chunk(b"a\n", pid=1))
    stream(chunk(b"b\n", pid=2))
    out = capfd.readouterr().out
    assert f"\033[0;{stream.color_code(1)}m" in out
    assert f"\033[0;{stream.color_code(2)}m" in out
    assert FancyStdoutStream(color="Random").color is None
    with pytest.raises(ValueError, match="color"):
        FancyStdoutStream(color="purple")


def test_console_streams_follow_a_replaced_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    StdoutStream()(chunk(b"text\n"))  # capsys gives a text stdout without .buffer
    assert capsys.readouterr().out == "text\n"


# -- QueueStream ---------------------------------------------------------------------------------


def test_queue_stream() -> None:
    stream = QueueStream()
    data = chunk(b"x")
    stream(data)
    stream(chunk(b"y"))
    data["data"] = b"changed"
    assert stream.get(timeout=1) == chunk(b"x")
    assert list(stream) == [chunk(b"y")]
    assert list(stream) == []
    assert stream.queue.empty()
    stream.close()


def test_queue_stream_maxsize_drops_the_oldest() -> None:
    stream = QueueStream(maxsize="2")
    for i in range(5):
        stream(chunk(b"%d" % i))
    assert [item["data"] for item in stream] == [b"3", b"4"]


# -- SyslogStream --------------------------------------------------------------------------------


@pytest.fixture
def udp_server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)  # the deadline of every recv
    yield sock
    sock.close()


def test_syslog_stream_over_udp(udp_server: socket.socket) -> None:
    port = udp_server.getsockname()[1]
    stream = SyslogStream(
        facility="local0", tag="web", address=f"127.0.0.1:{port}", priority="warning"
    )
    stream(chunk(b"hello\nwor", pid=12))
    assert udp_server.recv(4096) == b"<132>web[12]: hello"  # local0=16, warning=4: 16*8+4
    stream(chunk(b"ld\r\n", pid=12))
    assert udp_server.recv(4096) == b"<132>web[12]: world"
    stream(chunk(b"tail", pid=13))
    stream.close()
    assert udp_server.recv(4096) == b"<132>web[13]: tail"


def test_syslog_stream_built_with_the_watcher_tag(udp_server: socket.socket) -> None:
    port = udp_server.getsockname()[1]
    stream = build_stream(
        {"class": "SyslogStream", "address": f"udp://127.0.0.1:{port}", "tag": "myapp"}
    )
    stream(chunk(b"line\n", pid=5))
    stream.close()
    assert udp_server.recv(4096) == b"<14>myapp[5]: line"  # user=1, info=6


def test_syslog_stream_bad_options() -> None:
    with pytest.raises(ValueError, match="facility"):
        SyslogStream(facility="nope", address="127.0.0.1:514")
    with pytest.raises(ValueError, match="priority"):
        SyslogStream(priority="loud", address="127.0.0.1:514")
    with pytest.raises(ValueError, match="address"):
        SyslogStream(address="nowhere")


# -- build_stream --------------------------------------------------------------------------------


def test_build_stream_from_ini_strings(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    stream = build_stream(
        {
            "class": "FileStream",
            "filename": str(path),
            "max_bytes": "1000",
            "backup_count": "3",
            "tag": "watcher",
            "refresh_time": "0.3",
        }
    )
    assert isinstance(stream, FileStream)
    assert (stream.max_bytes, stream.backup_count) == (1000, 3)
    assert isinstance(stream, Stream)
    stream.close()


def test_build_stream_filename_alone_gives_a_file_stream(tmp_path: Path) -> None:
    stream = build_stream({"filename": str(tmp_path / "x.log"), "time_format": "%H"})
    assert type(stream) is FileStream
    stream.close()


@pytest.mark.parametrize("name", sorted(BUILTIN_STREAMS))
def test_build_stream_knows_every_builtin(name: str, tmp_path: Path) -> None:
    conf: dict[str, Any] = {"class": name, "filename": str(tmp_path / "x.log"), "tag": "w"}
    if name == "SyslogStream":
        conf = {"class": name, "address": "127.0.0.1:9"}
    stream = build_stream(conf)
    assert type(stream) is BUILTIN_STREAMS[name]
    stream.close()


def test_build_stream_class_spellings(tmp_path: Path) -> None:
    for spec in (
        "circus.stream.FileStream",
        "circus.streams.files.FileStream",
        "circus.streams.files:FileStream",
        "filestream",
        FileStream,
    ):
        stream = build_stream({"class": spec, "filename": str(tmp_path / "x.log")})
        assert type(stream) is FileStream, spec
        stream.close()


def test_build_stream_typed_values(tmp_path: Path) -> None:
    stream = build_stream(
        {
            "class": "TimedRotatingFileStream",
            "filename": str(tmp_path / "t"),
            "rotate_when": "midnight",
            "rotate_interval": 2,
            "utc": False,
            "backup_count": 4,
            "max_bytes": "ignored by this class",
        }
    )
    assert isinstance(stream, TimedRotatingFileStream)
    assert (stream.rotate_when, stream.rotate_interval, stream.utc) == ("MIDNIGHT", 2, False)
    stream.close()


def test_build_stream_dotted_path_to_a_custom_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mystreams.py").write_text(
        "class Collect:\n"
        "    def __init__(self, prefix='', tag=None):\n"
        "        self.prefix, self.tag, self.seen = prefix, tag, []\n"
        "    def __call__(self, data):\n"
        "        self.seen.append(self.prefix + data['data'].decode())\n"
        "class Outer:\n"
        "    class Inner(Collect):\n"
        "        pass\n"
        "def collect_all(**kwargs):\n"
        "    return Collect(**kwargs)\n"
        "broken = 1\n"
    )
    (tmp_path / "badmod.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mystreams", raising=False)

    stream = build_stream({"class": "mystreams.Collect", "prefix": "> ", "tag": "w"})
    stream(chunk(b"hi"))
    stream.close()  # added: the class has no close()
    assert stream.wrapped.seen == ["> hi"]  # type: ignore[attr-defined]
    assert stream.wrapped.tag == "w"  # type: ignore[attr-defined]

    inner = build_stream({"class": "mystreams:Outer.Inner", "refresh_time": "1"})
    assert type(inner.wrapped).__name__ == "Inner"  # type: ignore[attr-defined]
    assert build_stream({"class": "mystreams.collect_all", "tag": "w"}).wrapped.tag == "w"  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="^colour: not an option of mystreams.Collect"):
        build_stream({"class": "mystreams.Collect", "colour": "red"})
    with pytest.raises(ValueError, match="^class: .*has no 'Nope'"):
        build_stream({"class": "mystreams.Nope"})
    with pytest.raises(ValueError, match="^class: .*not a class or callable"):
        build_stream({"class": "mystreams.broken"})
    with pytest.raises(ValueError, match="^class: cannot import 'badmod'.*not_a_module_anywhere"):
        build_stream({"class": "badmod.Thing"})
    with pytest.raises(ValueError, match="^class: cannot import 'no_such_pkg.mod.Cls'"):
        build_stream({"class": "no_such_pkg.mod.Cls"})


def test_build_stream_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^class: unknown stream class 'FileStreem'") as info:
        build_stream({"class": "FileStreem", "filename": "x"})
    assert isinstance(info.value, StreamConfigError)
    assert info.value.key == "class"
    with pytest.raises(ValueError, match="^max_bytes: expected a size"):
        build_stream({"filename": str(tmp_path / "x"), "max_bytes": "big", "backup_count": "1"})
    with pytest.raises(ValueError, match="^filename: required by WatchedFileStream"):
        build_stream({"class": "WatchedFileStream"})
    with pytest.raises(ValueError, match="^class: missing"):
        build_stream({"time_format": "%H"})
    with pytest.raises(ValueError, match="^stream: expected a callable"):
        build_stream({"stream": "not callable"})


def test_build_stream_ignores_unknown_builtin_options_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.streams"):
        stream = build_stream({"class": "StdoutStream", "filename": str(tmp_path / "x")})
    assert "'filename' is not used by StdoutStream" in caplog.text
    stream.close()


def test_build_stream_wraps_a_given_callable() -> None:
    seen: list[dict[str, Any]] = []
    stream = build_stream({"stream": seen.append})
    stream(chunk(b"x"))
    stream.close()
    assert seen == [chunk(b"x")]
    queue_stream = QueueStream()
    assert build_stream({"stream": queue_stream}) is queue_stream  # already has close()


# -- LinePrefixer and OutputRing -----------------------------------------------------------------


def test_prefixer_lets_out_a_line_without_end() -> None:
    prefixer = LinePrefixer("T", clock=FakeClock())
    assert prefixer.feed(b"a" * CARRY_LIMIT, 1, "stdout") == b""
    out = prefixer.feed(b"b", 1, "stdout")
    assert out == b"T [1] | " + b"a" * CARRY_LIMIT + b"b"
    assert prefixer.feed(b"c\nd\n", 1, "stdout") == b"c\nT [1] | d\n"  # no prefix mid-line
    assert prefixer.flush() == b""


def test_output_ring_keeps_the_last_lines() -> None:
    clock = FakeClock()
    ring = OutputRing(max_bytes=64, _clock=clock)
    ring.add(1, "stdout", b"a1\na")
    ring.add(2, "stderr", b"b1\n")
    ring.add(1, "stdout", b"2\n")
    now = clock.now
    assert ring.last(10) == [
        (now, 1, "stdout", b"a1"),
        (now, 2, "stderr", b"b1"),
        (now, 1, "stdout", b"a2"),
    ]
    assert ring.last(1) == [(now, 1, "stdout", b"a2")]
    assert [line[3] for line in ring.last(10, pid=1)] == [b"a1", b"a2"]
    assert [line[3] for line in ring.last(10, names=("stderr",))] == [b"b1"]
    assert ring.last(0) == []
    # a line still being written shows at the end of its process's output
    ring({"data": b"held", "pid": 4, "name": "stdout"})
    assert ring.last(1, pid=4) == [(now, 4, "stdout", b"held")]


def test_output_ring_is_bounded_by_bytes_and_drops_cut_lines() -> None:
    ring = OutputRing(max_bytes=100)
    stream = b"".join(b"x%03d\n" % j for j in range(1000))
    for i in range(0, len(stream), 7):  # chunks that do not follow line ends
        ring.add(3, "stdout", stream[i:i + 7])
    lines = [line[3] for line in ring.last(1000)]
    assert lines[-3:] == [b"x997", b"x998", b"x999"]
    assert 15 <= len(lines) <= 20
    # whole lines only, and consecutive: nothing lost inside the ring
    numbers = [int(line[1:]) for line in lines]
    assert all(len(line) == 4 for line in lines) and numbers == list(range(numbers[0], 1000))
    assert sum(len(c[3]) for c in ring._chunks) <= 100


def test_output_ring_costs_one_append_per_chunk() -> None:
    ring = OutputRing(max_bytes=1 << 20)
    chunk = b"".join(b"%07d\n" % i for i in range(8192))  # 64 KiB of short lines
    for _ in range(100):
        ring.add(1, "stdout", chunk)
    assert len(ring._chunks) == 16  # 1 MiB of 64 KiB chunks, not 800,000 lines
    assert ring.last(2)[-1][3] == b"0008191"
