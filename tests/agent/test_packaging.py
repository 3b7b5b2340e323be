"""The agent installs and starts light: it imports nothing of the platform, and its package names the command."""

import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = {"django", "rest_framework", "celery", "marketplace", "billing", "accounts"}


def test_the_agent_imports_nothing_of_the_platform():
    check = (
        "import sys, agent.__main__, agent.jobs, agent.benchmark, agent.hardware\n"
        f"loaded = {{name.split('.')[0] for name in sys.modules}} & {SERVER_PACKAGES!r}\n"
        "assert not loaded, loaded"
    )
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-c", check], cwd=ROOT, capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stderr


def test_its_package_names_the_command_and_no_dependencies():
    project = tomllib.loads((ROOT / "agent" / "pyproject.toml").read_text())["project"]

    module, _sep, function = project["scripts"]["marketplace-agent"].partition(":")
    assert callable(getattr(import_module(module), function))
    assert project["dependencies"] == []


def test_without_a_url_or_token_it_says_what_is_needed():
    done = subprocess.run(
        [sys.executable, "-m", "agent"], cwd=ROOT, capture_output=True, text=True, check=False, env={"PATH": ""}
    )

    assert done.returncode == 2 and "--url and --token" in done.stderr
