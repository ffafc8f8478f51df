"""``safetensors``: ``pc.save(model, "model.safetensors")``, tied weights kept.

With a project ``save``, the project decides the format: the variation hands it a path
ending ``.safetensors`` and checks what it wrote. A torch file there is no safetensors
round trip (and torch >= 2.6 refuses to ``torch.load`` it by its suffix): skipped, saying so.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .base import SaveJob, Saved, SaveSide
from .registry import VariationUnavailable


class Safetensors(SaveSide):
    suffix = ".safetensors"
    default_save = "pc.save(model, 'model.safetensors')"

    def produce(self, job: SaveJob) -> Saved:
        saved = super().produce(job)
        if job.save is not None:
            written = _format(saved.path)
            if written != "safetensors":
                raise VariationUnavailable(
                    f"your save wrote {written} to {saved.path.name}, not safetensors: it picks "
                    "its format by itself, so there is no safetensors file to round-trip"
                )
        return saved

    def write(self, wrapped: nn.Module, path: Path, job: SaveJob) -> None:
        from ... import api

        api.save(wrapped, path)


def _format(path: Path) -> str:
    from ... import api

    if not path.exists():
        return "nothing"
    try:
        fmt = api.inspect(path).format
    except Exception as exc:  # noqa: BLE001 - what it is not is enough to say
        return f"a file pytest-ckpt cannot read ({type(exc).__name__})"
    return fmt if fmt == "safetensors" else f"a {fmt} file"


SAFETENSORS = Safetensors()
