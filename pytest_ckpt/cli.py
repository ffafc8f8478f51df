"""``pytest-ckpt inspect|diff|verify``: the library from a shell. Exit 0 fine, 1 differs, 2 unreadable or bad usage."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

EXIT_OK, EXIT_DIFFERS, EXIT_ERROR = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from .errors import CheckpointError

    try:
        return args.run(args)
    except CheckpointError as err:
        _emit_error(args, err)
        return EXIT_ERROR
    except (OSError, TypeError, ValueError) as err:
        _emit_error(args, err)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-ckpt",
        description="Inspect, compare and verify PyTorch checkpoints.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="where the weights are, wrappers stripped, blocks, dtypes, stored config")
    inspect.add_argument("path")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--all", action="store_true", help="list every tensor")
    inspect.add_argument("--like", metavar="SOURCE",
                         help="when the file holds several models (a training state), read the one "
                              "shaped like SOURCE (a checkpoint or a schema snapshot)")
    inspect.set_defaults(run=_inspect)

    diff = sub.add_parser("diff", help="compare EXPECTED with ACTUAL (exit 1 when they differ)")
    diff.add_argument("expected")
    diff.add_argument("actual")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    diff.add_argument("--no-values", action="store_true", help="compare schemas only (metadata, no tensor data)")
    diff.add_argument("--atol", type=float, default=0.0)
    diff.add_argument("--rtol", type=float, default=0.0)
    diff.add_argument("--verbose", "-v", action="store_true", help="list every differing name")
    diff.add_argument("--like", metavar="SOURCE",
                      help="when EXPECTED holds several models, compare the one shaped like SOURCE")
    diff.set_defaults(run=_diff)

    verify = sub.add_parser("verify", help="integrity: truncated, corrupted, incomplete or unsafe (exit 2)")
    verify.add_argument("path")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(run=_verify)
    return parser


def _inspect(args) -> int:
    from .api import inspect

    found = inspect(args.path, like=args.like)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2, default=str))
    else:
        print(found.render(every_tensor=args.all))
    return EXIT_OK


def _diff(args) -> int:
    from .api import diff

    result = diff(args.expected, args.actual, values=not args.no_values, atol=args.atol, rtol=args.rtol,
                  like=args.like)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(result.report(verbose=args.verbose))
    return EXIT_OK if result.ok else EXIT_DIFFERS


def _verify(args) -> int:
    from .api import verify

    verify(args.path)
    if args.json:
        print(json.dumps({"path": args.path, "ok": True}))
    else:
        print(f"ok: {args.path} is complete and readable")
    return EXIT_OK


def _emit_error(args, err: Exception) -> None:
    if getattr(args, "json", False):
        payload = {"ok": False, "error": type(err).__name__, "message": str(err)}
        for attr in ("path", "kind", "globals"):
            if hasattr(err, attr):
                value = getattr(err, attr)
                payload[attr] = list(value) if isinstance(value, tuple) else value
        print(json.dumps(payload, indent=2))
    else:
        print(f"pytest-ckpt: error: {err}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
