"""scripts/bench.py end to end, in its smallest form: a flood of 200 messages to 3 receivers of a real chat-server on
plain asyncio. The benchmark's figures are not checked here (they are for people to read); what it records is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def test_a_tiny_flood_records_one_json_line_with_every_message_delivered_once(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    command = [
        sys.executable, str(BENCH), "--case", "flood", "--receivers", "3", "--messages", "200", "--loop", "asyncio",
        "--out", str(out), "--no-pin", "--no-table",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    [line] = out.read_text().splitlines()
    record = json.loads(line)
    assert record["case"] == "flood"
    assert record["loop"] == "asyncio"
    assert record["params"]["receivers"] == 3
    assert record["messages"] == 200
    assert record["deliveries"] == 600
    assert (record["lost"], record["dup"], record["reordered"]) == (0, 0, 0)
    assert record["ok"] is True
    assert record["deliveries_per_s"] > 0
    for key in ("server_cpu_s", "server_cpu_util", "gen_cpu_s", "gen_cpu_util", "date", "listen_overflows"):
        assert key in record
    assert {"cpu_model", "cores", "python"} <= set(record["machine"])
