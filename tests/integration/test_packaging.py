"""What ``pip install`` puts in site-packages: the product is one top-level package,
``bridgehead``; the ServiceNow sandbox and the test support are distributions of their own
(``sandbox/``, ``testing/``) that an agent's or a control plane's install never carries.

Built for real (``pip wheel`` with build isolation, as a user's pip does) and read back from the
wheel's own file list and metadata, not from pyproject.toml."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bridgehead_testing.harness import ROOT, scaled


def build_wheel(project: Path, out: Path) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(project)],
        check=True,
        capture_output=True,
        timeout=scaled(240),
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def top_level(wheel: zipfile.ZipFile) -> set[str]:
    return {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}


def entry_points(wheel: zipfile.ZipFile) -> configparser.ConfigParser:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(name).decode())
    return parser


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return build_wheel(ROOT, tmp_path_factory.mktemp("product"))


def test_the_product_installs_one_top_level_package(product: zipfile.ZipFile) -> None:
    assert {"bridgehead"} == top_level(product)
    names = set(product.namelist())
    # Typed for plugin authors (PEP 561), and every layer of the house is in it.
    assert "bridgehead/py.typed" in names
    for package in ("sdk", "protocol", "core", "agent", "plugins", "control"):
        assert f"bridgehead/{package}/__init__.py" in names, package
    # No sandbox and no test support inside the product, under any name.
    assert [] == [n for n in names if "sandbox" in n or "bridgehead_testing" in n]


def test_the_product_commands_are_the_agent_and_the_control_plane(product: zipfile.ZipFile) -> None:
    scripts = entry_points(product)["console_scripts"]
    assert {"bridgehead-agent", "bridgehead-control"} == set(scripts)
    assert "bridgehead.agent.cli:main" == scripts["bridgehead-agent"]


def test_the_sandbox_is_its_own_distribution_and_command(tmp_path: Path) -> None:
    sandbox = build_wheel(ROOT / "sandbox", tmp_path)
    assert {"bridgehead_sandbox"} == top_level(sandbox)
    assert "bridgehead_sandbox.cli:main" == entry_points(sandbox)["console_scripts"]["bridgehead-sandbox"]
    metadata = next(n for n in sandbox.namelist() if n.endswith(".dist-info/METADATA"))
    # It depends on the product (one server start-up helper), never the other way round.
    assert "Requires-Dist: bridgehead" in sandbox.read(metadata).decode()
