"""The scaling engine: pure decision logic, no I/O.

Everything here is a function of a :class:`~autoscaler.engine.snapshot.Snapshot` (plus the
estimator state the policy carries between ticks), so the daemon and the simulator run the very
same code.
"""
