"""The local demo (``python -m autoscaler demo``): see :mod:`autoscaler.demo.cli`.

Modules: ``plan`` (time compression, trace window and thinning), ``stack`` (Valkey, API, daemon),
``traffic`` (HTTP replay, completion ledger), ``monitor`` (ticks, worker lifetimes), ``view`` (live
panel), ``report`` (scoring the live run beside simulated replays of its recorded traffic).
"""

from autoscaler.demo.cli import main

__all__ = ["main"]
