"""bench/token_endpoint.py, plus each measured run's maximum latency (wrk's ``max``).

A stall of the store (e.g. a WAL checkpoint on SQLite's commit path) shows in the
maximum latency long before it moves a percentile. Same arguments as
token_endpoint.py; after each of its measured lines, one ``max_latency`` line per wrk run
(the warm-up's too)::

    .venv/bin/python bench/token_max_latency.py --connections 16 --duration 60
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import token_endpoint


def _wrk_with_max(*args: Any, **kwargs: Any) -> Any:
    result = _wrk(*args, **kwargs)
    print(f"max_latency c={result.connections} seconds={result.duration_s:.0f} "
          f"max={result.max_ms:.1f}ms p99={result.p99_ms:.1f}ms", flush=True)
    return result


_wrk = token_endpoint._wrk
token_endpoint._wrk = _wrk_with_max

if __name__ == "__main__":
    sys.exit(token_endpoint.main())
