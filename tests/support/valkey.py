"""The real Valkey server the integration tests use; it lives in :mod:`jobqueue.server` (the demo
starts the same one), re-exported here so test modules keep importing it from the test support."""

from jobqueue.server import (
    INSTALL_HINT,
    ServerBinaryNotFoundError,
    ValkeyServer,
    find_server_binary,
    free_port,
)

__all__ = ["INSTALL_HINT", "ServerBinaryNotFoundError", "ValkeyServer", "find_server_binary", "free_port"]
