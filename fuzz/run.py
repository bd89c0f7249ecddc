"""Run the fuzz targets for a bounded time each: `scripts/fuzz [--seconds N] [--target NAME] [--short] [--merge]`.

Each target runs in a process of its own (`fuzz/main.py`) on two corpus folders: `.fuzz/corpus/<target>/` (not in
git; libFuzzer adds the inputs it finds there, so each run goes on from the last one) and the seeds in
`fuzz/corpus/<target>/`. Every run is bounded: `-max_total_time` seconds, `-runs` inputs, `-timeout` seconds for any
one input (a hang is reported as a failure), `-rss_limit_mb`. Nothing touches the network.

A failing input is written to `.fuzz/artifacts/`; replay it with `.venv/bin/python fuzz/main.py TARGET FILE`.
`--merge` then copies into `fuzz/corpus/<target>/` the found inputs that add coverage, to be committed.
Without atheris (it has wheels for CPython 3.11 on x86-64 Linux only) this says so and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("frames", "requests", "datagrams")
SHORT_SECONDS = 5  # scripts/test: three targets in well under 30 s
STATS = re.compile(r"^stat::(\w+):\s*(\d+)", re.MULTILINE)
COVERAGE = re.compile(r"cov: (\d+) ft: (\d+)")
ARTIFACT = re.compile(r"Test unit written to (\S+)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="time per target (default 60)")
    parser.add_argument("--runs", type=int, default=50_000_000, help="at most this many inputs per target")
    parser.add_argument("--target", action="append", choices=TARGETS, help="only this target (repeatable)")
    parser.add_argument("--short", action="store_true", help=f"the scripts/test run: {SHORT_SECONDS} s per target")
    parser.add_argument("--merge", action="store_true", help="then keep new coverage in fuzz/corpus/<target>/")
    return parser.parse_args()


def max_len(target: str) -> int:
    """The target's MAX_LEN: the longest input libFuzzer tries."""
    sys.path.insert(0, str(ROOT / "fuzz"))
    return int(importlib.import_module(f"fuzz_{target}").MAX_LEN)


def fuzz_command(target: str, seconds: int, runs: int) -> list[str]:
    work = ROOT / ".fuzz" / "corpus" / target
    work.mkdir(parents=True, exist_ok=True)
    artifacts = ROOT / ".fuzz" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        str(ROOT / "fuzz" / "main.py"),
        target,
        f"-max_total_time={seconds}",
        f"-runs={runs}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-max_len={max_len(target)}",
        f"-artifact_prefix={artifacts}/{target}-",
        "-print_final_stats=1",
        str(work),
        str(ROOT / "fuzz" / "corpus" / target),
    ]


def run_target(target: str, seconds: int, runs: int, quiet: bool) -> bool:
    """Fuzz one target; True if it found nothing. Quiet: one line of summary, the log only on a failure."""
    command = fuzz_command(target, seconds, runs)
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=quiet, text=True, timeout=seconds + 120, check=False)
    except subprocess.TimeoutExpired as exc:  # libFuzzer's own bounds failed: the child is killed by run()
        print(f"fuzz {target}: still running {exc.timeout:.0f} s after it should have stopped", file=sys.stderr)
        return False
    elapsed = time.monotonic() - started
    log = (done.stdout or "") + (done.stderr or "")  # atheris prints the Python traceback on stdout
    if done.returncode != 0:
        if quiet:
            sys.stderr.write(log[-6000:])
        written = ARTIFACT.findall(log)
        where = written[-1] if written else ".fuzz/artifacts/"
        print(f"fuzz {target}: FAILED (exit {done.returncode}); the input is in {where}", file=sys.stderr)
        print(f"  replay it: .venv/bin/python fuzz/main.py {target} {where}", file=sys.stderr)
        return False
    stats = dict(STATS.findall(log))
    coverage = COVERAGE.findall(log)
    inputs = f", {stats['number_of_executed_units']} inputs" if "number_of_executed_units" in stats else ""
    cov = f", cov {coverage[-1][0]} ft {coverage[-1][1]}" if coverage else ""
    print(f"fuzz {target}: {elapsed:.1f} s{inputs}{cov}, no failure")
    return True


def merge(target: str) -> None:
    """Add to the committed seeds the inputs found so far that bring coverage they lack (libFuzzer -merge=1)."""
    command = [
        sys.executable,
        str(ROOT / "fuzz" / "main.py"),
        target,
        "-merge=1",
        f"-max_len={max_len(target)}",
        str(ROOT / "fuzz" / "corpus" / target),
        str(ROOT / ".fuzz" / "corpus" / target),
    ]
    subprocess.run(command, cwd=ROOT, capture_output=True, check=True, timeout=600)
    print(f"fuzz {target}: merged into fuzz/corpus/{target}/")


def main() -> int:
    args = parse_args()
    if importlib.util.find_spec("atheris") is None:
        print(
            "fuzz: skipped: atheris is not installed (it has wheels for CPython 3.11 on x86-64 Linux only; "
            "`pip install 'atheris>=2.3'` elsewhere needs clang and libFuzzer)"
        )
        return 0
    seconds = SHORT_SECONDS if args.short else args.seconds
    ok = True
    for target in args.target or list(TARGETS):
        ok = run_target(target, seconds, args.runs, quiet=args.short) and ok
        if ok and args.merge:
            merge(target)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
