"""The JavaScript client's own unit tests (tests/js/), run by Node's built-in test runner.

No npm dependencies: ``node --test`` and the module as served. Without Node the test skips, saying
so, except under CI, which must run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_javascript_client_unit_tests() -> None:
    node = shutil.which("node")
    if node is None:
        reason = "node is not installed: the JavaScript client's unit tests (tests/js/) need Node 20 or later"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run them")
        pytest.skip(reason)
    result = subprocess.run(
        [node, "--test", "tests/js"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout, result.stdout[-5000:]
