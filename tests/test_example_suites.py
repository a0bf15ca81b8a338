"""Examples that carry their own test suite, written with dynwf's pytest plugin, pass when run as
their authors run them: ``python -m pytest`` inside the example."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("example", sorted(p.parent.parent.name for p in EXAMPLES.glob("*/tests/test_*.py")))
def test_the_examples_own_tests_pass(example):
    completed = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                               cwd=EXAMPLES / example, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout.splitlines()[-1]
