"""Which globals a pickle asks for, found by reading its opcodes: nothing is run."""

from __future__ import annotations

import io
import pickletools
from typing import Callable, Iterable

from ..errors import CheckpointError
from . import pickle_stub

# Opcodes that push a string: candidates for STACK_GLOBAL's module and name.
_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
     "BINSTRING", "SHORT_BINSTRING"}
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
# Opcodes that push nothing: they must not disturb the stack model below.
_NO_PUSH = frozenset({"PROTO", "FRAME", "STOP", "POP", "POP_MARK", "MARK"}) | _PUT_OPS


def requested_globals(data: bytes | io.IOBase) -> list[str]:
    """The globals (``module.name``) a pickle asks for, in order, without running it.

    One pickle only: it stops at STOP. The opcodes are read first (GLOBAL, INST,
    STACK_GLOBAL, memoized strings), then the pickle runs on a machine of stubs
    (:mod:`.pickle_stub`), which resolves what the real loader would, whatever the opcode
    sequence (memo, POP and MARK tricks). Raises ``ValueError`` on a malformed stream.

    >>> import pickle, os
    >>> requested_globals(pickle.dumps(os.path.join, protocol=2))
    ['posixpath.join']
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        found, _ = _opcode_globals(data)
        raw = data
    else:
        start = data.tell()
        found, end = _opcode_globals(data)
        data.seek(start)
        raw = data.read(end - start)
        data.seek(end)
    try:
        _, resolved = pickle_stub.run(raw)
    except ValueError as e:  # the real loader fails here too: what it resolved before, and the opcodes'
        return list(dict.fromkeys([*(_display(*n) for n in e.args[1]), *found]))
    return [_display(*n) for n in resolved]


def _opcode_globals(data: bytes | io.IOBase) -> tuple[list[str], int]:
    """The globals the opcodes name (a coarse stack model), and where the pickle ends."""
    found: list[str] = []
    memo: dict = {}
    stack: list = []  # a coarse model of the stack: strings, else None
    end = 0
    for op, arg, pos in pickletools.genops(data):
        name = op.name
        end = pos + 1
        if name in _STRING_OPS:
            stack.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
        elif name in _PUT_OPS:
            if arg > _MAX_MEMO:  # the C unpickler sizes its memo by the index: refuse before it
                raise ValueError(f"memo index {arg} at byte {pos}: no pickle this size needs it")
            memo[arg] = stack[-1] if stack else None
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name in _GET_OPS:
            stack.append(memo.get(arg))
        elif name in ("GLOBAL", "INST"):
            module, _, qual = arg.partition(" ")
            found.append(_display(module, qual))
            stack.append(None)
        elif name == "STACK_GLOBAL":
            module, qual = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
            del stack[-2:]
            if isinstance(module, str) and isinstance(qual, str):
                found.append(_display(module, qual))
            else:  # an obfuscated STACK_GLOBAL: refuse rather than guess
                found.append("<unresolved STACK_GLOBAL>")
            stack.append(None)
        elif name not in _NO_PUSH:
            stack.append(None)
        if len(stack) > 64:  # only the top two matter; keep the model small
            del stack[:-8]
    return found, end


#: memo indexes above this are refused before unpickling (the memo is an array that big)
_MAX_MEMO = 1 << 24


def _display(module: str, qual: str) -> str:
    # torch.save's protocol 2 names builtins as Python 2 did (__builtin__.set): read as torch reads it
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    module, qual = NAME_MAPPING.get((module, qual), (IMPORT_MAPPING.get(module, module), qual))
    # os.system pickles as posix.system (nt.system on Windows): say what the user wrote.
    if module in ("posix", "nt"):
        module = "os"
    return f"{module}.{qual}"


def torch_allowed() -> Callable[[str], bool]:
    """A predicate: is this global in torch's weights-only allowlist (plus user additions)?"""
    from torch import _weights_only_unpickler as wo

    allowed = set(wo._get_allowed_globals())
    user = getattr(wo, "_get_user_allowed_globals", None)
    if user is not None:
        allowed |= set(user())
    return allowed.__contains__


def check_globals(path, names: Iterable[str], allowed: Callable[[str], bool], what: str, *,
                  advise: bool = False) -> None:
    """Raise ``CheckpointError(kind="unsafe")`` naming every global ``allowed`` rejects.
    ``advise``: a torch file, which ``torch.serialization.add_safe_globals`` can open to data
    classes (:mod:`.safe_globals`: their own kind, and the line that allows them)."""
    bad = list(dict.fromkeys(n for n in names if not allowed(n)))
    if bad:
        hint = ""
        if advise:
            from . import safe_globals

            refusal = safe_globals.data_class_refusal(path, bad, what)
            if refusal is not None:
                raise refusal
            hint = safe_globals.unknown_hint(bad)
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise CheckpointError(
            path,
            "unsafe",
            f"{what} asks for {shown}, which weights-only loading does not allow; "
            f"nothing was run{hint}. Load it with weights_only=False only if you trust its origin",
            globals=bad,
        )


def scan(path, data: bytes | io.IOBase, what: str = "the pickle", *, allowlist: bool = True,
         advise: bool = False) -> list[str]:
    """Refuse a pickle of DTensors (:func:`refuse_dtensors`), and (``unsafe``, when
    ``allowlist``) one asking for globals outside torch's weights-only allowlist.

    Returns the globals found. A stream too damaged to scan raises ``corrupted``.
    """
    try:
        names = requested_globals(data)
    except Exception as e:  # any decoding failure of a damaged stream
        raise CheckpointError(path, "corrupted", f"{what} is damaged ({_short(e)})") from None
    refuse_dtensors(path, names)
    if allowlist:
        check_globals(path, names, torch_allowed(), what, advise=advise)
    return names


#: how every refusal of a torch file of DTensors begins
DTENSORS = "a state dict of DTensors written with torch.save"
#: how a sharded DTensor's placement pickles (``_StridedShard``: FSDP2 over tensor parallelism)
_SHARD_PLACEMENTS = (".placement_types.Shard", ".placement_types._StridedShard")


def refuse_dtensors(path, names: Iterable[str]) -> None:
    """A ``torch.save`` of ``model.state_dict()`` under FSDP2 (or tensor parallelism) pickles
    DTensors: each rank's file holds its own slice of every tensor, and reading it needs the
    saving job's device mesh. Said the same way in every process, whatever it imported (torch
    allows DTensor globals only once ``torch.distributed.tensor`` is imported)."""
    names = list(names)
    if not any(n.startswith("torch.distributed") and n.endswith(".DTensor") for n in names):
        return
    fix = ("save with torch.distributed.checkpoint from every rank (dcp.save(model.state_dict(), "
           "checkpoint_id=DIR)), or gather the whole model first: get_model_state_dict(model, "
           "options=StateDictOptions(full_state_dict=True, cpu_offload=True)), then torch.save "
           "on rank 0")
    if any(n.endswith(_SHARD_PLACEMENTS) for n in names):
        raise CheckpointError(
            path, "incomplete",
            f"{DTENSORS}: one rank's shards of a sharded "
            "model (under FSDP2, model.state_dict() holds only this rank's slice of each tensor; "
            f"the other ranks' slices are not in this file); {fix}")
    raise CheckpointError(
        path, "unreadable",
        f"{DTENSORS}: one rank's view of a distributed "
        f"model, which only that job's device mesh can read back; {fix}")


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__
