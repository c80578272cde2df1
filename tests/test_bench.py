"""The benchmark harness runs end to end: real gateways, real wrk, a table and a full prediction log."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "load_tests" / "bench.py"


def report(script: Path, out: Path, *args: str, timeout: float = 600) -> str:
    """Run a load_tests script with ``--out``; its markdown report, after checking it exited 0."""
    completed = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return out.read_text()


@pytest.mark.slow
def test_bench_compares_the_gateway_with_a_bare_bentoml_service(tool, tmp_path):
    tool("wrk")
    table = report(BENCH, tmp_path / "result.md", "--rounds", "2", "--duration", "1", "--warmup", "1",
                   "--connections", "4")  # fmt: skip
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) == {"target", "bare", "gateway-off", "gateway-on", "gateway-all"}
    assert "| 1.00x (rounds: 1.00-1.00) |" in rows["bare"] and "x (rounds:" in rows["gateway-all"]
    assert all(row.rstrip().endswith("| 0 |") for name, row in rows.items() if name != "target")
    assert "gateway-on vs gateway-off: requests/s " in table and "gateway-all vs gateway-off: " in table
    assert "gateway-all: challenger inference" in table  # everything on includes shadow mode
    assert "requests in the prediction log" in table and "Load generator: at most" in table
    assert "- session.run: " in table and "- decoding the target's own request body" in table


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a fresh clone installs the three peers' environments first
def test_bench_loads_the_peers_and_the_gateway_in_each_format(tool, tmp_path):
    """MLServer, KServe and FastAPI in their own environments (made on first use), beside the gateway
    on the v1, binary v2 and columnar formats: every request answered, every gateway one logged."""
    tool("wrk")
    table = report(BENCH, tmp_path / "peers.md", "--targets",
                   "kserve,mlserver,fastapi,gateway-v1,gateway-binary,gateway-columns", "--rows", "8",
                   "--rounds", "1", "--duration", "1", "--warmup", "1", "--rest", "0", "--connections", "4",
                   timeout=1800)  # fmt: skip
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) - {"target"} == {"kserve", "mlserver", "fastapi", "gateway-v1", "gateway-binary",
                                      "gateway-columns"}  # fmt: skip
    assert all(row.rstrip().endswith("| 0 |") for name, row in rows.items() if name != "target")
    assert "kserve: v1 to /v1/models/bare:predict" in table
    assert "gateway-binary: v2-binary to /v2/models/breast-cancer/infer" in table
    for name in ("gateway-v1", "gateway-binary", "gateway-columns"):
        assert f"{name}: " in table and re.search(rf"{name}: \d+ requests in the prediction log", table)


@pytest.mark.slow
def test_bench_soaks_the_last_target_and_reports_its_memory(tool, tmp_path):
    tool("wrk")
    table = report(BENCH, tmp_path / "soak.md", "--targets", "gateway-on", "--rounds", "1", "--rows",
                   "256", "--duration", "1", "--warmup", "1", "--rest", "0", "--connections", "4",
                   "--soak", "3")  # fmt: skip
    assert "Soak: gateway-on as fast as answered for 3 s: " in table and ", 0 failed." in table
    memory = next(line for line in table.splitlines() if line.startswith("Resident memory"))
    assert re.match(r"Resident memory of its processes \(MiB\): start \d+, end \d+ \([+-]\d+\.\d%\); "
                    r"over time: 0 s \d+, ", memory)  # fmt: skip
    assert memory.count(" s ") >= 10  # sampled at the start, each tenth and the end
    assert "| gateway-on | " in table and "256 row(s) a request" in table


@pytest.mark.slow
def test_bench_runs_shadow_mode_against_bad_challengers(tool, tmp_path):
    tool("wrk")
    table = report(BENCH, tmp_path / "shadow.md", "--targets", "shadow-off,shadow-hung,shadow-raising",
                   "--rounds", "1", "--rate", "200", "--duration", "1", "--warmup", "1", "--rest", "0",
                   "--connections", "4")  # fmt: skip
    for target in ("shadow-hung", "shadow-raising"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {target} "))
        assert row.rstrip().endswith("| 0 |")  # no champion answer failed
    assert "p99 vs shadow-off" in table
    # the hung challenger's first mirror was stopped at the 1 s shadow timeout, the others shed
    # while the thread rested; every mirror to the raising one is a logged server error
    assert "shadow-hung: 1 requests mirrored (by status: {504: 1})" in table
    assert "shadow-raising: " in table and "by status: {500:" in table


@pytest.mark.slow
def test_monitor_ingestion_is_measured_on_a_prefilled_log(tmp_path):
    # exits 0 only when the monitor read every record
    result = report(BENCH.parent / "monitor_ingest.py", tmp_path / "ingest.md", "--records", "3000",
                    "--peak", "100")  # fmt: skip
    assert re.search(r"the monitor read them in [\d.]+ s from a cold start: \*\*[\d,]+ records/s\*\*", result)
    assert re.search(r"- [\d.]+x the gateway's peak of 100 requests/s", result)


@pytest.mark.slow
def test_bench_runs_a_gateway_on_postgresql_and_counts_its_log_there(tool, postgres, tmp_path):
    """gateway-pg: the bench makes a database on the server it is given and counts the requests
    logged in it, as it counts the SQLite file's."""
    tool("wrk")
    table = report(BENCH, tmp_path / "pg.md", "--targets", "gateway-off,gateway-pg", "--postgres-url",
                   postgres.url(), "--rounds", "1", "--duration", "1", "--warmup", "1", "--rest", "0",
                   "--connections", "4")  # fmt: skip
    assert re.search(r"gateway-pg: \d+ requests in the prediction log", table)
    assert "gateway-pg vs gateway-off: requests/s " in table and "| gateway-pg | " in table


@pytest.mark.slow
def test_the_log_writer_benchmark_writes_into_both_stores(postgres, tmp_path):
    table = report(BENCH.with_name("log_writer.py"), tmp_path / "writer.md", "--records", "2000",
                   "--writers", "2", "--peak", "1000", "--postgres-url", postgres.url())  # fmt: skip
    rows = [line.split("|")[1:4] for line in table.splitlines() if line.startswith("| sqlite") or
            line.startswith("| postgres")]  # fmt: skip
    assert [[cell.strip() for cell in row] for row in rows] == [
        [store, writers, request_rows]
        for store in ("sqlite", "postgres")
        for writers, request_rows in (("1", "1"), ("2", "1"), ("1", "256"))
    ]


@pytest.mark.slow
def test_the_writers_sweep_counts_commits_and_records_for_each_fleet_size(postgres, tmp_path):
    table = report(BENCH.with_name("log_writer.py"), tmp_path / "sweep.md", "--sweep", "1,3",
                   "--records-per-writer", "400", "--postgres-url", postgres.url())  # fmt: skip
    rows = [[cell.strip() for cell in line.split("|")[1:5]] for line in table.splitlines()
            if re.match(r"\| \d+ \|", line)]  # fmt: skip
    assert [row[0] for row in rows] == ["1", "3"] and rows[0][3] == "1.00x"
    assert all(float(row[1].replace(",", "")) > 0 and float(row[2].replace(",", "")) > 0 for row in rows)


@pytest.mark.slow
def test_the_pages_first_paint_is_measured_in_chromium(tool, tmp_path):
    chromium = tool("chromium")
    result = report(BENCH.parent / "ui_paint.py", tmp_path / "ui.md", "--requests", "100", "--loads", "1",
                    "--chromium", chromium)  # fmt: skip
    rows = {line.split("|")[1].strip() for line in result.splitlines() if re.match(r"\| \w+ \| \d+ \|", line)}
    assert rows == {"models", "drift", "quality", "compare", "history", "card"}
