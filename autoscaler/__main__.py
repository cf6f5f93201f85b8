"""Command line: ``python -m autoscaler {run,check-config,import-keda,demo}``.

Exit codes: 0 success; 2 a config or input problem (one line on stderr naming the bad field);
1 anything else that stopped the daemon.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from autoscaler.config import ConfigError, effective_yaml, load_config, read_text
from autoscaler.logs import setup_logging

if TYPE_CHECKING:
    from autoscaler.metrics import ListenError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

log = logging.getLogger("autoscaler")


_ALLOW_LOCAL_HELP = (
    "accept targets of kind local, whose command runs as a process of the daemon (development and "
    "demos only: whoever edits the config could run anything with the daemon's credentials); holds "
    "for every reload, which cannot turn it on by itself"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autoscaler",
        description="Startup-aware autoscaler for ML inference workers that pull jobs from Redis.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon (hot-reloads the config file)")
    run.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    run.add_argument("--port", type=int, help="override the config's HTTP port (0: any free port)")
    run.add_argument("--allow-local-targets", action="store_true", help=_ALLOW_LOCAL_HELP)

    check = commands.add_parser("check-config", help="validate a config and print it with all defaults")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--allow-local-targets", action="store_true", help=_ALLOW_LOCAL_HELP)

    keda = commands.add_parser("import-keda", help="convert a KEDA ScaledObject (redis trigger) to a config")
    keda.add_argument("file", metavar="SCALEDOBJECT_YAML")
    keda.add_argument(
        "--policy",
        default="startup-aware",
        choices=("startup-aware", "keda"),
        help="startup-aware (default) or keda (reproduces KEDA's listLength behaviour)",
    )
    keda.add_argument("--live", action="store_true", help="act at once instead of starting in shadow mode")

    # Listed for --help only: main() hands everything after "demo" to the demo's own parser.
    commands.add_parser("demo", help="run the whole system locally against a recorded trace (demo --help)")
    return parser


def _error(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def check_config(path: str, allow_local_targets: bool = False) -> int:
    try:
        config = load_config(path, allow_local_targets=allow_local_targets)
    except ConfigError as exc:
        return _error(str(exc))
    sys.stdout.write(effective_yaml(config))
    return EXIT_OK


def import_keda(path: str, policy: str, live: bool) -> int:
    from autoscaler.keda_import import KedaImportError, convert_text, render

    try:
        conversion = convert_text(read_text(path), policy=policy, shadow=not live)
    except ConfigError as exc:
        return _error(str(exc))
    except KedaImportError as exc:
        return _error(f"{path}: {exc}")
    for note in conversion.notes:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.write(render(conversion, path))
    return EXIT_OK


def demo(args: Sequence[str]) -> int:
    try:
        module = importlib.import_module("autoscaler.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "autoscaler.demo":
            raise
        return _error(
            "the demo is not part of this build yet (the autoscaler/demo package is missing)", EXIT_FAILED
        )
    return int(module.main(list(args)) or 0)


def _cannot_listen(exc: ListenError, path: str, port_given: bool) -> str | None:
    """One line naming the setting to change when the HTTP server could not listen because of its
    ``host`` or ``port``; None for a failure no setting explains (out of file descriptors, ...)."""
    host, port = exc.host, exc.port
    port_option = "--port" if port_given else f"port: in {path}"
    host_option = f"host: in {path}"
    reason = exc.strerror or str(exc.cause)
    if isinstance(exc.cause, socket.gaierror):
        return (
            f"host {host!r} does not resolve ({reason}): set {host_option} to an address or a name "
            "this machine resolves"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use on {host}: pass another {port_option} (0: any free)"
    if exc.errno == errno.EACCES:
        return (
            f"port {port} on {host} may not be listened on ({reason}; ports below 1024 need "
            f"privileges): pass another {port_option} (0: any free)"
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
        # EINVAL: a link-local IPv6 address without its interface (fe80::1 for fe80::1%eth0).
        scope = (
            " (a link-local IPv6 one with its interface: fe80::1%eth0)" if exc.errno == errno.EINVAL else ""
        )
        return (
            f"host {host!r} is not an address this machine can listen on ({reason}): set {host_option} "
            f"to one of its addresses{scope}, or 0.0.0.0 (every IPv4 address) or '::' (every address)"
        )
    return None


def run(path: str, port: int | None, allow_local_targets: bool = False) -> int:
    from autoscaler.daemon import Daemon
    from autoscaler.metrics import ListenError

    try:
        config = load_config(path, port=port, allow_local_targets=allow_local_targets)
    except ConfigError as exc:
        return _error(str(exc))
    setup_logging(config.log_level)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon = Daemon(
            config, config_path=path, port_override=port, allow_local_targets=allow_local_targets
        ).start()
    except ListenError as exc:
        problem = _cannot_listen(exc, path, port is not None)
        if problem is None:
            log.exception("daemon failed to start")
            return _error(f"cannot start: {exc}", EXIT_FAILED)
        return _error(problem)
    except Exception as exc:
        log.exception("daemon failed to start")
        return _error(f"cannot start: {exc}", EXIT_FAILED)
    try:
        daemon.wait(stop)
    finally:
        daemon.stop()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return demo(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file, args.allow_local_targets)
    if args.command == "import-keda":
        return import_keda(args.file, args.policy, args.live)
    return run(args.config, args.port, args.allow_local_targets)


if __name__ == "__main__":
    sys.exit(main())
