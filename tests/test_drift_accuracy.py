"""The drift accuracy benchmark's fast part: through the real push, validation, log and monitor, clean
windows of every size raise no alarm, every change is found within 2,000 rows, and a quiet day of
low traffic fires no alert."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "load_tests" / "drift_accuracy.py"


@pytest.mark.slow
def test_no_false_alarm_every_change_found_and_a_quiet_day_stays_quiet(tmp_path):
    out = tmp_path / "drift.md"
    args = ["--runs", "25", "--delay-runs", "3", "--day-hours", "6", "--out", str(out)]
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    table = out.read_text()
    false_alarms = re.findall(r"^\| ([\d,]+) \| ([\d.]+)% \((\d+)\) \|$", table, re.MULTILINE)
    assert [size for size, _, _ in false_alarms] == ["100", "200", "500", "1,000"]
    assert all(count == "0" for _, _, count in false_alarms), table
    delays = re.findall(r"^\| (.+?) \| modelgate \| ([\d,]+|never) \| (\d+)% \|", table, re.MULTILINE)
    assert len(delays) == 5 and all(within == "100" for _, _, within in delays), table
    assert "- alerts fired: 0" in table
