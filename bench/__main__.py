"""`make bench`: every bench/*.py module with a run() function, measured in one run.

Each run() returns rows of (measurement, value, unit); ratios are computed inside the module from
figures measured side by side in the same process, never against numbers from another day.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    wanted = set(argv)
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    failed = False
    for name in names:
        if wanted and name not in wanted:
            continue
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "run"):
            continue
        print(f"\n== bench/{name}.py ==", flush=True)
        started = time.monotonic()
        try:
            rows = module.run()
        except Exception as exc:  # report and go on: one broken bench must not hide the others
            print(f"  FAILED: {type(exc).__name__}: {exc}")
            failed = True
            continue
        width = max((len(r[0]) for r in rows), default=10)
        for label, value, unit in rows:
            shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
            print(f"  {label:<{width}}  {shown:>14} {unit}")
        print(f"  ({time.monotonic() - started:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
