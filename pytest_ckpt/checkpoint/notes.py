"""Notes: one cause (or one normalization) in one line, with its fix. Used by every layer above formats."""

from __future__ import annotations

from dataclasses import dataclass

NOTE_KINDS = (
    "prefix",
    "nested",
    "layer-count",
    "incomplete",
    "config",
    "shape",
    "dtype",
    "values",
    "tied",
    "unsafe",
    "missing",
    "unexpected",
    "renamed",
    "candidates",
    # values that are the other side's rounded to float16/bfloat16 and back: a cast
    "cast",
    # a training state's model lacks tensors a copy beside it (an EMA) holds
    "partial",
    # only= cut both sides down to a subset of names (info); adapters (PEFT/LoRA) that do not load
    "only",
    "adapter",
    # resume equivalence (pytest_ckpt.resume): one kind per piece of training state
    "resume-weights",
    "resume-optimizer",
    "resume-scheduler",
    "resume-scaler",
    "resume-rng",
    "resume-data",
    "resume-counter",
    "resume-state",
    "resume-hidden-state",
    # issue 14: a checkpoint loaded on another world size holds the saved rows in another order
    "reshard",
)


@dataclass(frozen=True)
class Note:
    """One cause, in one line, with its fix.

    ``kind`` is one of :data:`NOTE_KINDS`; ``text`` says what was found,
    ``fix`` what to do (empty for notes that only say what was normalized);
    ``names`` are the canonical names the note covers (for ``to_dict``).
    """

    kind: str
    text: str
    fix: str = ""
    names: tuple[str, ...] = ()
    #: True for notes that explain a normalization (prefix, nested) rather than a problem
    info: bool = False

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "fix": self.fix,
                "names": list(self.names), "info": self.info}
