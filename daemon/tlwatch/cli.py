"""The `tlwatch` command: argument parsing, output and exit codes (the only module that prints)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tlwatch import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75
EXIT_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlwatch",
        description="Watch folders and keep their media in sync with Twelve Labs assets.",
    )
    parser.add_argument("--version", action="version", version=f"tlwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_sandbox(commands)
    return parser


def _add_sandbox(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tlwatch.sandbox import DEMO_API_KEY

    sandbox = commands.add_parser(
        "sandbox",
        help="serve a local stand-in for the Twelve Labs assets API",
        description="Serve a local, contract-faithful Twelve Labs assets API on loopback. "
        "The first line printed is the base URL to use as [api] base_url.",
    )
    sandbox.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default %(default)s)"
    )
    sandbox.add_argument(
        "--port", type=int, default=8741, help="port; 0 picks a free one (default %(default)s)"
    )
    sandbox.add_argument(
        "--api-key",
        default=DEMO_API_KEY,
        help="the one key accepted (default: the demo key %(default)s)",
    )
    sandbox.add_argument(
        "--data-dir",
        type=Path,
        help="where uploads are stored (default: a temporary folder, removed on exit)",
    )
    sandbox.add_argument(
        "--generation",
        type=int,
        choices=(1, 2, 3),
        default=3,
        help="asset lifecycle generation to play (default %(default)s)",
    )
    sandbox.add_argument(
        "--processing-seconds",
        type=float,
        default=2.0,
        help="time from upload to ready/failed (default %(default)s)",
    )
    sandbox.add_argument(
        "--chunk-size",
        type=int,
        default=5_242_880,
        help="multipart chunk size in bytes (default %(default)s)",
    )
    sandbox.add_argument(
        "--initial-urls",
        type=int,
        default=10,
        help="presigned URLs given when a multipart upload starts (default %(default)s)",
    )
    sandbox.add_argument(
        "--direct-limit",
        type=int,
        default=200_000_000,
        help="largest direct upload in bytes (default %(default)s)",
    )
    sandbox.add_argument(
        "--no-multipart",
        action="store_true",
        help="answer 403 to multipart uploads, as for an account without them",
    )
    sandbox.add_argument(
        "--fail-name",
        action="append",
        default=[],
        metavar="TEXT",
        help="assets whose filename contains TEXT fail processing (repeatable)",
    )
    sandbox.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault, e.g. endpoint=create,status=429,retry_after=2,times=3 "
        "or endpoint=create,drop=after (repeatable; see the README)",
    )
    sandbox.set_defaults(handler=_run_sandbox)


def _run_sandbox(args: argparse.Namespace) -> int:
    from tlwatch.sandbox import Fault, Settings, make_server, serve_until_signalled

    settings = Settings(
        api_key=args.api_key,
        generation=args.generation,
        processing_seconds=args.processing_seconds,
        chunk_size=args.chunk_size,
        initial_urls=args.initial_urls,
        direct_limit=args.direct_limit,
        multipart_enabled=not args.no_multipart,
        fail_names=args.fail_name,
    )
    try:
        faults = [Fault.parse(spec) for spec in args.fault]
    except (TypeError, ValueError) as error:
        print(f"tlwatch sandbox: --fault: {error}", file=sys.stderr)
        return EXIT_USAGE
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tlwatch-sandbox-"))
    try:
        server = make_server(args.host, args.port, settings, data_dir)
    except OSError as error:
        print(
            f"tlwatch sandbox: cannot listen on {args.host}:{args.port}: {error.strerror}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    server.service.faults.extend(faults)
    try:
        serve_until_signalled(server, lambda url: print(url, flush=True))
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code
