"""The GPU check script keeps working: its quick mode on the CPU prints its table and passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "bench" / "gpu.py"


def test_gpu_check_runs_on_the_cpu_in_quick_mode():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    checks = [row.split("|")[1].strip() for row in rows[1:]]
    assert checks[0].startswith("extract fp32")
    assert any(check.startswith("probe selection, 16 probes") for check in checks)
    assert any(check.startswith("pre-training step") for check in checks)
    parity = [row for row in rows if row.startswith("| parity")]
    assert len(parity) == 3 and all(row.rstrip(" |").endswith("pass") for row in parity)
