"""`python -m render_node.benchmark` for old instructions: the code is frameproof.benchmark."""

from __future__ import annotations

import sys

from frameproof.benchmark import BenchmarkResult, main, run_benchmark, score_from_seconds

__all__ = ["BenchmarkResult", "main", "run_benchmark", "score_from_seconds"]

if __name__ == "__main__":
    sys.exit(main())
