"""Run one fuzz target under atheris: `python fuzz/main.py TARGET [libFuzzer flags and corpus folders]`.

The target's module is imported inside `atheris.instrument_imports`, so the `chat` code it calls reports coverage;
libFuzzer then calls the target's `check` with each input until a flag such as `-max_total_time` or `-runs` stops it.
`fuzz/run.py` (behind `scripts/fuzz`) chooses the flags; call this directly only to pass libFuzzer flags of your own.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import atheris

TARGETS = ("frames", "requests", "datagrams")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus folders]")
    name = sys.argv.pop(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with atheris.instrument_imports(include=["chat"]):
        target = importlib.import_module(f"fuzz_{name}")
    atheris.Setup(sys.argv, target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
