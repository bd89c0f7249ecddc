"""What the docs promise about the distribution (issue 17, item 5) and the README's capture (item 9), checked
against pyproject.toml and the docs themselves."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=;!~]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_the_distribution_is_lanroom_and_the_import_package_chat() -> None:
    assert PROJECT["name"] == "lanroom"
    assert PROJECT["entry-points"]["pytest11"] == {"chat": "chat.pytest_plugin"}


def test_the_pytest_extra_brings_only_what_the_plugin_needs_and_dev_the_project_tools() -> None:
    extras = PROJECT["optional-dependencies"]
    assert requirement_names(extras["pytest"]) == {"pytest", "pytest-asyncio"}
    assert {"ruff", "mypy", "pexpect", "hypothesis"} <= requirement_names(extras["dev"])
    assert "lanroom" in requirement_names(extras["dev"]), "dev includes the pytest extra"


def test_the_docs_say_how_to_install_it_by_its_name() -> None:
    for doc in (ROOT / "README.md", ROOT / "docs" / "testing.md"):
        text = doc.read_text()
        assert "pip install 'lanroom[pytest]'" in text, doc
        assert "pip install 'chat[" not in text and "pip install chat" not in text, doc


def test_the_readme_capture_shows_the_port_its_text_names() -> None:
    readme = (ROOT / "README.md").read_text()
    capture = readme[readme.index("## The terminal client") :].split("```")[3]
    assert re.findall(r"127\.0\.0\.1:(\d+) │", capture) == ["7777"]
    assert "port 7777" in readme
