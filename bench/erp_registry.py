"""Benchmark: ERP connector resolution (``ConnectorRegistry.get``) against a bare dict
lookup measured in the same run.

Not a test: CI does not run it. Run: ``.venv/bin/python bench/erp_registry.py``.
One line, key=value: the median per-call time of each over ``--repeat`` rounds of
``--number`` calls, their ratio, the p99 and the slowest of ``--samples`` single
timed resolutions (a lone slow one is the machine: a GC pause, a preemption), and
whether the p99 stays under the 10 ms budget.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import timeit

from connectors.erp.dropzone import DropzoneConnector
from connectors.erp.mock import MockConnector
from connectors.erp.registry import DROPZONE_JSON_V1, MOCK, ConnectorRegistry
from issuer.clock import SystemClock

BUDGET_MS = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--samples", type=int, default=100_000)
    args = parser.parse_args()

    registry = ConnectorRegistry()
    registry.register(DROPZONE_JSON_V1, DropzoneConnector(SystemClock()))
    registry.register(MOCK, MockConnector())
    reference = {DROPZONE_JSON_V1: registry.get(DROPZONE_JSON_V1), MOCK: registry.get(MOCK)}

    def per_call(statement: str, namespace: dict[str, object]) -> float:
        rounds = timeit.repeat(statement, globals=namespace, number=args.number,
                               repeat=args.repeat)
        return statistics.median(rounds) / args.number

    registry_s = per_call("get(key)", {"get": registry.get, "key": DROPZONE_JSON_V1})
    dict_s = per_call("table[key]", {"table": reference, "key": DROPZONE_JSON_V1})
    samples = []
    for _ in range(args.samples):
        started = time.perf_counter()
        registry.get(DROPZONE_JSON_V1)
        samples.append(time.perf_counter() - started)
    samples.sort()
    p99_ms = samples[int(len(samples) * 0.99)] * 1e3
    print(f"bench=erp_registry python={platform.python_version()} number={args.number} "
          f"repeat={args.repeat} registry_get_ns={registry_s * 1e9:.1f} "
          f"dict_lookup_ns={dict_s * 1e9:.1f} ratio={registry_s / dict_s:.2f} "
          f"p99_ms={p99_ms:.5f} max_ms={samples[-1] * 1e3:.4f} "
          f"under_{BUDGET_MS:g}ms={'yes' if p99_ms < BUDGET_MS else 'NO'}")
    return 0 if p99_ms < BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
