"""One trainer case as a training command for ckpt-chaos (``ckpt-chaos run ... -- python chaos_target.py
FRAMEWORK CASE AT {out}``): it trains to the end, saving after step ``AT`` with the framework's own save;
when ``{out}`` already holds a checkpoint it resumes from it as a project does (``resume_from_checkpoint=True``;
Lightning's ``ckpt_path="last"``); it writes the final weights to ``{out}/final.pt``, the file ckpt-chaos
judges. Runs in the peers' venv: it imports the case, never pytest-ckpt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases  # noqa: E402


def main(framework: str, name: str, at: int, out: Path) -> None:
    c = cases.case(framework, name)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if framework == "hf":
        trainer = cases.hf_trainer(c, str(out), save_at=(at,))
        trainer.train(resume_from_checkpoint=True if any(out.glob("checkpoint-*")) else None)
        model = trainer.model
    else:
        from lightning.pytorch.callbacks import ModelCheckpoint

        saves = ModelCheckpoint(dirpath=out / "saves", every_n_train_steps=at, save_top_k=-1, save_last=True)
        model, trainer = cases.lightning_module(c), cases.lightning_trainer(c, str(out), callbacks=[saves])
        trainer.fit(model, cases.lightning_data(c), ckpt_path="last" if any((out / "saves").glob("*.ckpt")) else None)
    torch.save(model.state_dict(), out / "final.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
