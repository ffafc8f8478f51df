"""Bad input: a clear error naming the project's function and what it did, never an internal traceback."""

from __future__ import annotations

import pytest
import torch

import pytest_ckpt as pc
from pytest_ckpt.errors import CheckpointError
from tests.resume import loops as L

HERE = __name__


def check(start=L.start, step=L.step, save=L.save, load=L.load, **kw):
    kw.setdefault("config", L.config())
    kw.setdefault("steps", 4)
    return pc.check_resume(start, step, save=save, load=load, **kw)


def step_returns_text(run):
    L.step(run)
    return "the loss"


def step_returns_a_vector(run):
    L.step(run)
    return torch.ones(3)


def load_raises(run, path):
    raise KeyError("optimizer")


def load_returns_the_model(run, path):
    L.load(run, path)
    return run.model


def save_writes_nothing(run, path):
    pass


def start_without_a_module(config=None):
    return {"step": 0, "weights": torch.zeros(2)}


def start_raises(config=None):
    raise RuntimeError("no GPU here")


def test_a_step_that_returns_no_loss_is_a_type_error_naming_it():
    with pytest.raises(TypeError) as info:
        check(step=step_returns_text)
    assert str(info.value).startswith(f"{HERE}.step_returns_text returned 'the loss' (a str) at step 1: "
                                      "step(run) must return the loss")


def test_a_step_that_returns_a_vector_is_a_type_error():
    with pytest.raises(TypeError, match=rf"{HERE}.step_returns_a_vector returned a tensor of shape \(3,\) at step 1"):
        check(step=step_returns_a_vector)


def test_a_load_that_raises_is_named_with_what_it_was_loading():
    with pytest.raises(pc.ResumeError) as info:
        check(load=load_raises)
    text = str(info.value)
    assert text.startswith(f"{HERE}.load_raises raised KeyError: 'optimizer' (loading the checkpoint saved "
                           "after step 2 from ")
    assert isinstance(info.value.__cause__, KeyError)  # the project's own traceback comes with it


def test_a_load_that_returns_something_else_than_the_run_is_a_type_error():
    with pytest.raises(TypeError, match=rf"^{HERE}.load_returns_the_model returned Net\( .* \(a Net\), not the run "
                                        r"\(a Run\): load\(run, path\) returns the run to continue, or None"):
        check(load=load_returns_the_model)


def test_a_save_that_writes_nothing_is_a_checkpoint_error():
    with pytest.raises(CheckpointError) as info:
        check(save=save_writes_nothing)
    assert info.value.kind == "not-found"
    assert f"{HERE}.save_writes_nothing(run, path) wrote nothing at path after step 2" in str(info.value)


def test_a_run_without_a_module_is_a_value_error_naming_start():
    with pytest.raises(ValueError) as info:
        check(start=start_without_a_module)
    assert str(info.value).startswith(f"{HERE}.start_without_a_module built a run with no torch.nn.Module (dict; "
                                      'found run["weights"] (tensor), run["step"] (counter))')


def test_a_start_that_raises_is_named():
    with pytest.raises(pc.ResumeError, match=rf"^{HERE}.start_raises raised RuntimeError: no GPU here "
                                             r"\(starting the uninterrupted run\)"):
        check(start=start_raises)


@pytest.mark.parametrize("kw, message", [
    ({"steps": 1}, "steps=1: a resume check needs at least 2 steps"),
    ({"at": 4}, "at=4: each resume point must be a step from 1 to 3"),
    ({"at": (1, 0)}, r"at=\(1, 0\): each resume point"),
    ({"atol": -1.0}, "atol=-1.0: a tolerance is a number >= 0"),
])
def test_bad_arguments_say_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        check(**kw)


def test_a_function_that_is_not_callable_is_a_type_error():
    with pytest.raises(TypeError, match="save=None is not callable"):
        check(save=None)
