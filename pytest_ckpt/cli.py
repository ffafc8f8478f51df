"""``pytest-ckpt inspect|diff|verify``: the library from a shell. Exit 0 fine, 1 differs, 2 unreadable or bad usage."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
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
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="where the weights are, wrappers stripped, blocks, dtypes, stored config")
    inspect.add_argument("path")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--all", action="store_true", help="list every tensor")
    inspect.set_defaults(run=_inspect)

    diff = sub.add_parser("diff", help="compare EXPECTED with ACTUAL (exit 1 when they differ)")
    diff.add_argument("expected")
    diff.add_argument("actual")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    diff.add_argument("--no-values", action="store_true", help="compare schemas only (metadata, no tensor data)")
    diff.add_argument("--atol", type=float, default=0.0)
    diff.add_argument("--rtol", type=float, default=0.0)
    diff.add_argument("--verbose", "-v", action="store_true", help="list every differing name")
    diff.set_defaults(run=_diff)

    verify = sub.add_parser("verify", help="integrity: truncated, corrupted, incomplete or unsafe (exit 2)")
    verify.add_argument("path")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(run=_verify)
    return parser


def _inspect(args) -> int:
    from .checkpoint.resolve import resolve
    from .checkpoint.schema import dtype_name
    from .compare.ranges import block_counts

    view = resolve(args.path, values=False)
    schema = view.schema
    dtypes = Counter(dtype_name(s.dtype) for s in schema.values())
    blocks = {k: len(v) for k, v in block_counts(list(schema)).items()}
    info = view.info() | {
        "bytes": schema.nbytes,
        "dtypes": dict(dtypes),
        "blocks": blocks,
        "ties": [list(g) for g in view.ties] if view.ties is not None else None,
        "notes": [n.to_dict() for n in view.notes],
    }
    if args.json:
        info["schema"] = schema.to_dict()
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    print(f"{args.path}: {info['format']}, {len(schema)} tensors, {_human_bytes(schema.nbytes)}")
    print(f"  located at: {'.'.join(map(str, schema.located_at)) or '<top level>'}")
    print(f"  stripped:   {' '.join(schema.stripped) or '-'}")
    print(f"  dtypes:     {', '.join(f'{k} x{v}' for k, v in dtypes.most_common())}")
    if blocks:
        print(f"  blocks:     {', '.join(f'{k}: {v}' for k, v in blocks.items())}")
    if view.ties:
        print(f"  tied:       {'; '.join(' = '.join(g) for g in view.ties)}")
    if view.config:
        print(f"  config:     {json.dumps(view.config, sort_keys=True, default=str)[:300]}")
    for note in view.notes:
        print(f"  [{note.kind}] {note.text}")
    if args.all:
        for name, spec in schema.items():
            print(f"    {name}  {list(spec.shape)}  {dtype_name(spec.dtype)}")
    return EXIT_OK


def _diff(args) -> int:
    from .api import diff

    result = diff(args.expected, args.actual, values=not args.no_values, atol=args.atol, rtol=args.rtol)
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


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
