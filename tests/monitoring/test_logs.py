"""Log lines: ISO UTC timestamps to the microsecond, whole lines per write, never split."""

from __future__ import annotations

import datetime
import io
import select
import time

from monitoring.logs import LineLogger, Timestamp


def test_the_timestamp_is_now_in_iso_utc_to_the_microsecond():
    stamp = Timestamp()
    before = time.time()
    first = stamp(None, "info", {})["timestamp"]
    time.sleep(1.1)  # into the next second: the cached part must move on
    second = stamp(None, "info", {})["timestamp"]
    after = time.time()
    assert first.endswith("Z") and len(first) == len("2026-01-01T00:00:00.000000Z")
    parsed = [datetime.datetime.fromisoformat(s).timestamp() for s in (first, second)]
    assert before - 1e-6 <= parsed[0] < parsed[1] <= after + 1e-6
    assert parsed[1] - parsed[0] >= 1.1 - 1e-3


class Writes(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, data) -> int:
        self.sizes.append(len(data))
        return super().write(data)


def test_batched_lines_are_written_whole_and_at_most_a_pipe_buffer_at_a_time():
    out = Writes()
    lines = [b"x" * n + b"\n" for n in (100, 3000, 2000, 5000, 10)]
    LineLogger(out).flush_lines(lines)
    assert out.getvalue() == b"".join(lines)
    assert out.sizes == [3102, 2001, 5001, 11]  # only a single line longer than PIPE_BUF exceeds it
    assert select.PIPE_BUF == 4096
