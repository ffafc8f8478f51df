"""A loop written with accelerate: ``save_state``/``load_state`` as the project's save and load. An object
never passed to ``register_for_checkpointing`` is named as that component, fixed in accelerate's words."""

from __future__ import annotations

import pytest

import pytest_ckpt as pc

accelerate = pytest.importorskip("accelerate", reason="the accelerate example needs the accelerate extra")
torch = pytest.importorskip("torch")
nn = torch.nn

DATA = torch.utils.data.TensorDataset(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)),
                                      torch.randn(8, 2, generator=torch.Generator().manual_seed(1)))


class Steps:
    """A counter save_state keeps only as a registered object."""

    def __init__(self):
        self.done = 0

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = state["done"]


def start(register=True):
    accelerator = accelerate.Accelerator(cpu=True)
    model = accelerator.prepare(nn.Linear(4, 2))
    optimizer = accelerator.prepare(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    run = {"model": model, "optimizer": optimizer, "steps": Steps(),
           "save_state": accelerator.save_state, "load_state": accelerator.load_state}
    if register:
        accelerator.register_for_checkpointing(run["steps"])
    return run


def step(run):
    x, y = DATA[run["steps"].done % len(DATA)]
    loss = nn.functional.mse_loss(run["model"](x), y)
    loss.backward()
    run["optimizer"].step()
    run["optimizer"].zero_grad()
    run["steps"].done += 1
    return loss, (x, y)


def save(run, path):
    run["save_state"](path)


def load(run, path):
    run["load_state"](path)


def test_a_registered_loop_resumes_exactly():
    assert pc.check_resume(start, step, save=save, load=load, steps=4, at=2).ok


def test_an_object_never_registered_is_fixed_in_accelerates_words():
    with pytest.raises(pc.ResumeMismatch) as err:
        pc.check_resume(lambda: start(register=False), step, save=save, load=load, steps=4, at=2)
    (note,) = [n for n in err.value.report.notes if 'run["steps"]' in n.text]
    assert note.text.startswith('run["steps"] (Steps) not restored') and "it is not in the checkpoint" in note.text
    assert note.fix.startswith("accelerator.save_state wrote this checkpoint (model.safetensors, optimizer.bin, "
                               "random_states_0.pkl): it saves what prepare() was given and each object passed to "
                               "accelerator.register_for_checkpointing (custom_checkpoint_N.pkl: 0 here), and "
                               'run["steps"] is neither: accelerator.register_for_checkpointing(run["steps"])')
