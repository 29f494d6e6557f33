"""scripts/hostile.py, the list of hostile cases run against the command line, passes: no
traceback, one error line, bounded memory, no protected or unnamed file touched."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "hostile.py"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and file modes")
def test_every_hostile_case_is_refused_cleanly(mnist_dir, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(mnist_dir),
                             "--json", str(tmp_path / "hostile.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.endswith("0 broke a rule") and ": 0 tracebacks," in summary
