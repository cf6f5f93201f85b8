"""The inference worker: pulls jobs through :mod:`jobqueue`, runs a pluggable model, reports state.

Run it with ``python -m worker``; see :mod:`worker.config` for the environment it reads.
"""
