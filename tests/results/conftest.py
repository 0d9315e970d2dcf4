"""Fixtures for the results tests: the table and figure scripts, run in this process."""

import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"   # the checkout's, beside tests/


@pytest.fixture
def script(monkeypatch):
    """``script("make_tables", *args)`` runs scripts/make_tables.py's ``main()`` as
    ``python scripts/make_tables.py *args`` would, in this process (no interpreter to start)."""

    def run(name, *args):
        path = SCRIPTS / f"{name}.py"
        monkeypatch.setattr(sys, "argv", [str(path), *map(str, args)])
        return load_script(path).main()

    return run
