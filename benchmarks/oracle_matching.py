"""The oracle against the cheapest real schedule on a whole trace (one-slot pods).

The oracle (``experiments.oracle.oracle_pod_seconds``) stacks the zero-wait profile in levels.
``experiments.oracle.cheapest_schedule`` finds the cheapest schedule of real pods for the same
jobs by min-cost matching over all pairs (the Azure code trace's 8,819 jobs: a 600 MB matrix,
10-30 s). Equal costs say the levels are a schedule real pods can run.

    .venv/bin/python benchmarks/oracle_matching.py [--trace PATH] [--startup 30] [--service 5]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from experiments.oracle import cheapest_schedule, oracle_pod_seconds
from experiments.traces import AZURE_CODE_TRACE, trace_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default=str(AZURE_CODE_TRACE))
    parser.add_argument("--startup", type=float, default=30.0)
    parser.add_argument("--service", type=float, default=5.0)
    args = parser.parse_args(argv)
    arrivals = np.asarray(trace_argument(parser, "--trace", args.trace).arrivals, dtype=np.float64)
    service = np.full(len(arrivals), args.service)
    result = {
        "jobs": len(arrivals),
        "oracle_pod_seconds": round(oracle_pod_seconds(arrivals, service, 1, args.startup), 3),
        "cheapest_schedule_pod_seconds": round(cheapest_schedule(arrivals, service, args.startup), 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
