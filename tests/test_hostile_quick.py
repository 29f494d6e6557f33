"""``scripts/hostile.py --quick``, the handful of hostile cases CI runs, passes without MNIST:
no traceback, one error line, peak RSS under 1 GiB, no protected or unnamed file touched."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "hostile.py"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, named pipes, os.wait4")
def test_the_quick_hostile_cases_pass(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    *lines, summary = result.stdout.strip().splitlines()
    assert summary.endswith("0 broke a rule") and ": 0 tracebacks," in summary
    assert len(lines) >= 8 and all(" peak RSS " in line for line in lines)
