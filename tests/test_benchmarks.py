"""Every script in benchmarks/ still imports: a renamed library function breaks it here.

The scripts run rarely (some take minutes or need a GPU), so an import that moved would
otherwise only show when someone reruns a README figure. This imports each one, as
`python benchmarks/NAME.py` would (their folder first on sys.path), in one subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

IMPORT_ALL = """
import importlib, sys, traceback
sys.path.insert(0, sys.argv[1])
failed = []
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_benchmark_script_imports():
    names = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "__init__")
    assert "generator_fidelity" in names and "oracle_ceiling" in names
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, str(BENCHMARKS), *names],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
