#!/usr/bin/env python3
"""The load benchmark's driver: starts the release server on the seeded database, measures the
database's own ceiling with pgbench, drives every scenario with oha from separate processes
over loopback, and writes the Markdown report. `scripts/bench` builds, seeds and then runs this;
see bench/README.md for the scenarios and the knobs, and panels_bench/ for the modules.

Standard library only.
"""

import sys
from pathlib import Path

# bench/ first on the path: its package, and its jwt.py rather than any installed `jwt`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from panels_bench.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
