"""The fuzz targets' seed corpus (fuzz/corpus/) replayed through each target's checks, with or without atheris.

So the contract the fuzzers check (fuzz/fuzz_*.py) holds on every committed input in every run of the suite, a
regression that one of those inputs catches fails here by name, and a target that rots fails before a fuzz run.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = ("frames", "requests", "datagrams")


def target(name: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(f"fuzz_{name}")


SEEDS = [(name, path) for name in TARGETS for path in sorted((FUZZ / "corpus" / name).iterdir())]


def test_every_target_has_seeds() -> None:
    assert {name for name, _ in SEEDS} == set(TARGETS)


@pytest.mark.parametrize(("name", "path"), SEEDS, ids=[f"{name}/{path.name}" for name, path in SEEDS])
def test_seed_keeps_the_target_contract(name: str, path: Path) -> None:
    data = path.read_bytes()
    module = target(name)
    assert len(data) <= module.MAX_LEN
    module.check(data)
