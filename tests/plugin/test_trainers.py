"""``ckpt.resume_hf`` and ``ckpt.resume_lightning`` under ``@pytest.mark.ckpt_resume``, run by real pytest on a
tiny project: a Trainer that resumes exactly passes here and in a fresh process, the variations the framework
runs itself are skipped saying how, and a Lightning mid-epoch resume fails with its cause first."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("transformers", reason="the Trainer checks need the transformers extra")
pytest.importorskip("lightning", reason="the Lightning checks need the lightning extra")

pytest_plugins = ["pytester"]

#: the project: a tiny Llama Trainer (dropout, warm-up, AdamW) and a tiny Lightning module, CPU
PROJECT = textwrap.dedent(
    '''
    import logging
    import warnings

    import lightning as L
    import torch
    import transformers
    from torch import nn

    transformers.logging.set_verbosity_error()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    CONFIG = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                      attention_dropout=0.1)
    IDS = torch.randint(0, 64, (16, 8), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    XY = torch.utils.data.TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g))


    def make_trainer(output_dir):
        args = transformers.TrainingArguments(
            output_dir=output_dir, max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
            warmup_steps=2, report_to=[], use_cpu=True, disable_tqdm=True)
        return transformers.Trainer(model=transformers.LlamaForCausalLM(CONFIG), args=args,
                                    train_dataset=[{"input_ids": r, "labels": r} for r in IDS])


    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

        def training_step(self, batch, batch_idx):
            return nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)


    def make_lightning(root):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return L.Trainer(default_root_dir=root, max_steps=4, accelerator="cpu", logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


    def make_data():
        return torch.utils.data.DataLoader(XY, batch_size=4)  # 4 batches an epoch
    '''
)


def test_trainer_checks_run_plain_and_in_a_fresh_process_and_skip_what_the_framework_runs_itself(pytester):
    pytester.makepyfile(project=PROJECT)
    pytester.makepyfile(test_train="""
        import pytest
        import project

        @pytest.mark.ckpt_resume()
        def test_trainer_resumes(ckpt):
            report = ckpt.resume_hf(project.make_trainer, at=2)
            assert report.ok and "run.trainer.optimizer" in report.compared

        @pytest.mark.ckpt_resume("plain")
        def test_fit_resumes_mid_epoch(ckpt):
            ckpt.resume_lightning(project.Net, project.make_lightning, project.make_data, at=2)
    """)
    result = pytester.runpytest_subprocess("-v", "-rs", "-W", "ignore", "-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=2, skipped=2, failed=1)
    result.stdout.fnmatch_lines_random([
        "*test_trainer_resumes[[]resume-plain[]] PASSED*",
        "*test_trainer_resumes[[]resume-fresh-process[]] PASSED*",
        "SKIPPED [[]1[]] *: resume-compile: check_resume_hf runs under plain and fresh-process only: the Trainer "
        "compiles the model itself: TrainingArguments(torch_compile=True) in make_trainer, and plain checks the "
        "compiled run",
        "SKIPPED [[]1[]] *: resume-ddp: check_resume_hf runs under plain and fresh-process only: the Trainer wraps "
        "the model in DistributedDataParallel itself when launched on several processes *",
        # the failure's first line is its first cause, in Lightning's words
        "E * pytest_ckpt.errors.ResumeMismatch: resume-plain: [[]resume-data[]] The resumed run trained at step 3 "
        "on the batch the uninterrupted run saw at step 1 *",
        "E *fix: the checkpoint after step 2 is mid-epoch (step 2 of 4 in its epoch) and a plain DataLoader "
        "starts the epoch over on resume: use a stateful loader*",
    ])
