"""The import-linter contracts in pyproject.toml hold, and they would catch each tangle that
issue 10 untangled (re-introduced one at a time in a copy of the source tree).

Runs `lint-imports` (import-linter's own command) on real source files: no mocks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of src/ and pyproject.toml (the tests change files in copies of it)."""
    tree = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "src" / "mailcase", tree / "src" / "mailcase",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_source_tree_keeps_every_contract(pristine: Path) -> None:
    result = _lint(pristine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


#: (module changed, import re-introduced, contract expected to break): the tangles of issue 10.
TANGLES = [
    # The address book read feature tables and the VERP key of outbound.
    ("inbound/addressbook.py", "from mailcase.features.cases.models import routing_addresses",
     "mailcase layers run one way"),
    ("inbound/addressbook.py", "from mailcase.features.cases.automation.limits import cases_today",
     "mailcase layers run one way"),
    ("inbound/addressbook.py", "from mailcase.outbound.bounces.verp import load_verp_key",
     "mailcase layers run one way"),
    # outbound and delivery imported each other (relay tables one way, relay CLI the other).
    ("outbound/commands.py", "from mailcase.delivery.relays import list_relays",
     "mailcase layers run one way"),
    # cases and pipeline imported each other (DeferMessage one way, destinations the other).
    ("pipeline/worker.py", "from mailcase.features.cases.destination import CaseDestination",
     "mailcase layers run one way"),
    ("features/cases/destination.py", "from mailcase.pipeline.worker import DeferMessage",
     "mailcase layers run one way"),
    # cases and tasks imported each other.
    ("features/cases/destination.py", "from mailcase.features.tasks.service import create_task",
     "feature packages use each other one way"),
    # inbound.listener and inbound.session formed a cycle (the session's Gateway type).
    ("inbound/session.py", "from mailcase.inbound.listener import Gateway as _Gateway",
     "no import cycles between sibling modules"),
    # storage read the feature tables to build the whole schema.
    ("storage/db.py", "import mailcase.features.cases.models",
     "mailcase layers run one way"),
    # Mailbox sources sit beside the SMTP side: they share the spool, not each other's code,
    # and never reach up into the features.
    ("sources/fetcher.py", "from mailcase.inbound.session import new_queue_id",
     "mailcase layers run one way"),
    ("sources/store.py", "from mailcase.features.cases.models import routing_addresses",
     "mailcase layers run one way"),
]


@pytest.mark.parametrize(("module", "line", "contract"), TANGLES,
                         ids=[f"{m}:{line.split()[1]}" for m, line, _ in TANGLES])
def test_each_old_tangle_breaks_a_contract(
    pristine: Path, tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    path = tree / "src" / "mailcase" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # the old tangle\n",
                    encoding="utf-8")
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
