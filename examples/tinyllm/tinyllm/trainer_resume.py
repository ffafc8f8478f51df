"""The demo's Trainer step: ``pc.check_resume_hf`` on a tiny Llama ``transformers.Trainer`` (CPU, seconds).

The Trainer's own ``checkpoint-3`` resumes exactly; with ``save_only_model=True`` the resumed run starts
from a fresh optimizer and schedule, silently, and the check says so with the fix in the Trainer's words.

    python -m tinyllm.trainer_resume     # exit 0: the resume passes and the drift is caught
"""

from __future__ import annotations

import functools
import sys

import torch


def make_trainer(output_dir: str, **arguments):
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                      attention_dropout=0.1)
    ids = torch.randint(0, 64, (16, 8), generator=torch.Generator().manual_seed(0))
    args = transformers.TrainingArguments(output_dir=output_dir, max_steps=6, per_device_train_batch_size=4,
                                          learning_rate=1e-2, warmup_steps=2, report_to=[], use_cpu=True,
                                          disable_tqdm=True, **arguments)
    return transformers.Trainer(model=transformers.LlamaForCausalLM(config), args=args,
                                train_dataset=[{"input_ids": r, "labels": r} for r in ids])


def main() -> int:
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("skipped: transformers is not installed (pip install pytest-ckpt[transformers])")
        return 0
    import pytest_ckpt as pc

    print("correct: " + str(pc.check_resume_hf(make_trainer, at=3)).splitlines()[0])
    try:
        pc.check_resume_hf(functools.partial(make_trainer, save_only_model=True), at=3)
    except pc.ResumeMismatch as err:
        note = err.report.notes[0]
        print("save_only_model=True: " + str(err.report).splitlines()[0])
        print(f"  [{note.kind}] {note.text.split(':')[0]}: fix: {note.fix.split(': train with')[0]}")
        return 0
    print("save_only_model=True: NOT CAUGHT")
    return 1


if __name__ == "__main__":
    sys.exit(main())
