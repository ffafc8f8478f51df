"""A tiny transformers.Trainer run (Llama with dropout, warm-up, AdamW; CPU, no downloads) for the
resume checks, and the variations of it that break the resume."""

from __future__ import annotations

import torch
import transformers

transformers.logging.set_verbosity_error()

CONFIG = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                  attention_dropout=0.1)


class Tokens(torch.utils.data.Dataset):
    """16 sequences of 8 tokens: 4 batches an epoch, so step 3 is mid-epoch."""

    def __init__(self) -> None:
        self.ids = torch.randint(0, 64, (16, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


DATA = Tokens()


def make_trainer(output_dir: str, callbacks=(), **arguments) -> transformers.Trainer:
    """``callbacks``: classes, each built fresh for each trainer."""
    args = dict(output_dir=output_dir, max_steps=6, per_device_train_batch_size=4, learning_rate=1e-2,
                warmup_steps=2, report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
                save_strategy="no", logging_strategy="no")
    args.update(arguments)
    return transformers.Trainer(model=transformers.LlamaForCausalLM(CONFIG),
                                args=transformers.TrainingArguments(**args), train_dataset=DATA,
                                callbacks=[c() for c in callbacks])


class EMA(transformers.TrainerCallback):
    """An exponential moving average of the weights, kept in the callback and never saved."""

    def __init__(self) -> None:
        self.shadow: dict | None = None
        self.updates = 0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.shadow is None:
            self.shadow = weights
        else:
            for k, v in weights.items():
                self.shadow[k].mul_(0.9).add_(v, alpha=0.1)
        self.updates += 1
