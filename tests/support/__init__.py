"""Helpers for tests that run real processes: a Valkey server and worker subprocesses."""
