"""README gives the two fresh-machine commands, and CI runs exactly the test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _console_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```console\n(.*?)```", text, re.S)]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start") : readme.index("## Features")]
    blocks = _console_blocks(quick)
    assert len(blocks) == 2, "README quick start must give exactly two commands"
    main_job, tests = blocks
    assert "pip install" in main_job and "sarmae " in main_job
    assert "pip install" in tests and tests.endswith("pytest")
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ci_lines[-1] == tests
