"""A real Lightning checkpoint (Trainer.save_checkpoint after one CPU step): located, its
hyper_parameters are the file's config, inspect names Lightning, and it loads into the bare model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import pytest_ckpt as pc
from pytest_ckpt.cli import main

L = pytest.importorskip("lightning", reason="Lightning checkpoints need the lightning extra "
                                            "(pip install pytest-ckpt[lightning])")


class Net(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.l1 = nn.Linear(4, hidden)
        self.l2 = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


class LitNet(L.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.model = Net(hidden)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("lightning")
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 2))
    lit = LitNet()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and loggers
        trainer.fit(lit, torch.utils.data.DataLoader(data, batch_size=4))
    path = d / "epoch=0-step=1.ckpt"
    trainer.save_checkpoint(path)
    return lit, path


def test_a_lightning_checkpoint_loads_into_the_bare_model_with_one_prefix_note(trained):
    lit, path = trained
    net = Net()
    report = pc.load_into(net, path)
    assert report.ok and report.located_at == ("state_dict",) and report.stripped == ("model.",)
    prefix = [n for n in report.diff.notes if n.kind == "prefix"]
    assert len(prefix) == 1 and prefix[0].info
    assert prefix[0].text.startswith(f"attribute prefix model. removed from every name in {path}")
    assert not [n for n in report.diff.notes if not n.info]
    assert pc.diff(lit.model, net).ok  # the trained weights, after the step


def test_hyper_parameters_are_the_checkpoints_config(trained):
    _, path = trained
    assert pc.load_into(Net(), path, config={"hidden": 8}).ok  # lr is training's, not compared
    with pytest.raises(pc.CheckpointMismatch) as err:
        pc.load_into(Net(), path, config={"hidden": 16})
    assert "[config] config differs (checkpoint -> model): hidden: 8 -> 16" in str(err.value)


def test_inspect_says_it_is_a_lightning_checkpoint(trained, capsys):
    _, path = trained
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (f"  saved by:   Lightning {L.__version__} (Trainer.save_checkpoint, epoch 1, "
                      "global step 1; optimizer_states, lr_schedulers, loops beside the weights)")
    assert "  located at: state_dict" in out
    assert '  config:     (at hyper_parameters) {"hidden": 8, "lr": 0.1}' in out


# -- a LightningModule holding a transformers causal LM (issue 26, item 4) ---------------------

def _llama_config(layers: int = 2):
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                    num_hidden_layers=layers, num_attention_heads=2,
                                    num_key_value_heads=2, max_position_embeddings=32)


class LitCausalLM(L.LightningModule):
    """The most common Lightning + transformers shape: the causal LM as self.model, whose own
    base model is .model too, so the checkpoint's keys read model.model.layers..."""

    def __init__(self, layers: int = 2):
        super().__init__()
        from transformers import LlamaForCausalLM

        self.model = LlamaForCausalLM(_llama_config(layers))

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch[0], labels=batch[0]).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory):
    from lightning.pytorch.callbacks import ModelCheckpoint

    d = tmp_path_factory.mktemp("lightning-llama")
    torch.manual_seed(0)
    lit = LitCausalLM()
    data = torch.utils.data.TensorDataset(torch.randint(0, 32, (4, 8)))
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False,
                        callbacks=[ModelCheckpoint(dirpath=d, save_last=True)],
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(lit, torch.utils.data.DataLoader(data, batch_size=2))
    return lit, d / "last.ckpt"


def test_a_lightning_module_holding_a_causal_lm_loads_into_the_bare_causal_lm(causal_lm):
    from transformers import LlamaForCausalLM

    lit, path = causal_lm
    assert "model.model.layers.0.self_attn.q_proj.weight" in pc.schema(path)
    bare = LlamaForCausalLM(_llama_config())
    # the causal LM's own child is called model too: the prefix is removed because every
    # name then matches, not refused because the target has a child of that name
    report = pc.load_into(bare, path)
    assert report.ok and report.stripped == ("model.",), str(report.diff)
    assert not [n for n in report.diff.notes if not n.info]
    assert pc.diff(lit.model, bare).ok  # the trained weights, after the step


def test_a_depth_drift_in_the_lightning_causal_lm_is_named_as_one(causal_lm):
    from transformers import LlamaForCausalLM

    _, path = causal_lm
    with pytest.raises(pc.CheckpointMismatch) as err:
        pc.load_into(LlamaForCausalLM(_llama_config(layers=3)), path)
    first = str(err.value).splitlines()[1]
    assert first.startswith("  [layer-count] model.layers.2.*: block 2 missing"), str(err.value)
    assert "[renamed]" not in str(err.value)
