"""How ``make detection`` reads a peer's resume report (``benchmarks/resume/peers.py``): the way a
person reads it, one cause line at a time, on the peers' real report texts."""

import importlib.util
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parent.parent / "benchmarks" / "resume" / "peers.py"

#: pytest-torch 1.1.1's report on the gpt2 loop that does not restore the torch RNG (its own words)
RNG_REPORT = """Resuming from a checkpoint saved after step 3 does not reproduce the uninterrupted run:
  first divergence at step 3: loss 4.15342 after resuming, 4.15667 without interruption
  final weights: 29 tensor(s) differ (e.g. model['transformer.wte.weight']: 2046/2048 elements differ)
State after loading vs when saving:
  random number generators (python, torch, numpy) not restored: this matters when training draws random numbers
Hint: save and restore model, optimizer, scheduler, GradScaler and RNG state together (see save_training_state)."""


@pytest.fixture(scope="module")
def peers():
    # by path: the benchmark's folder never goes on sys.path (its modules have common names)
    spec = importlib.util.spec_from_file_location("bench_peers", PEERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_line_naming_three_generators_names_all_three_at_once(peers):
    result = peers._read_pytest_torch({"raised": True, "message": RNG_REPORT})
    assert result["first_line"] == ["rng:python", "rng:torch", "rng:numpy"]
    assert result["first_step"] == 4  # its step 3 counts from 0
    assert peers.right_first(result, {"rng:torch"})
    assert peers.right_first(result, {"rng:numpy"})
    assert not peers.right_first(result, {"optimizer"})


def test_the_first_cause_line_decides_not_a_later_one(peers):
    message = RNG_REPORT.replace("  random number", "  optimizer 'AdamW': state differs\n  random number")
    result = peers._read_pytest_torch({"raised": True, "message": message})
    assert result["first_line"] == ["optimizer"]
    assert peers.right_first(result, {"optimizer"})
    assert not peers.right_first(result, {"rng:torch"})


def test_a_report_that_passes_is_never_right_first(peers):
    result = peers._read_pytest_torch({"raised": False, "message": ""})
    assert not result["detected"] and result["first_line"] == []
    assert not peers.right_first(result, {"optimizer"})


@pytest.mark.parametrize(("path", "component"), [
    ("extra.loader.index", "data"),            # ResumeRunner: the extras a case declares, by name
    ('extra.ema["0.bias"]', "ema"),
    ("extra.counters.step", "counter"),
    ("step", "counter"),                       # its TrainingState.step
    ("rng.torch_cpu", "rng:torch"),
    ("rng.python", "rng:python"),
    ("optimizer.param_groups[0].lr", "optimizer"),
    ("model.0.weight", "weights"),
    ('ema["0.bias"]', "ema"),                  # check_resume: the checkpoint's own keys
    ("loader.order", "data"),
    ("rng.torch", "rng:torch"),
])
def test_trainparity_paths_map_to_the_component_they_name(peers, path, component):
    assert peers.trainparity_component(path) == component


def test_trainparity_names_one_component_per_difference(peers):
    payload = {"outcome": "FAIL", "first_divergent_step": 3, "_at": 3,
               "all_differences": [{"path": "step"}, {"path": "extra.counters.step"}, {"path": "model.0.weight"}]}
    result = peers._read_runner(payload)
    assert result["first_line"] == ["counter"]
    assert result["components"] == ["counter", "weights"]
    assert result["first_step"] is None  # the state right after load names no step of the run
    assert peers._read_runner(payload | {"first_divergent_step": 5})["first_step"] == 5
    abstain = peers._read_runner({"outcome": "ABSTAIN", "message": "snapshot capture did not complete", "_at": 3})
    assert abstain["error"].startswith("ABSTAIN") and not abstain["detected"]


def _pool_module():
    spec = importlib.util.spec_from_file_location("bench_pool", PEERS.with_name("pool.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_long_lived_worker_times_only_the_call_and_keeps_its_answers_apart_from_what_the_tool_prints(tmp_path):
    import sys

    pool = _pool_module()
    (tmp_path / "serve.py").write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(PEERS.parent)!r})\n"
        "import pool\n"
        "time.sleep(0.4)  # the worker's imports: paid once, before the first request, never timed\n"
        "def call(r):\n"
        "    print('the tool talks on stdout')\n"
        "    time.sleep(r['sleep'])\n"
        "    return {'pid': __import__('os').getpid(), 'x': r['x'] * 2}\n"
        "pool.serve(call)\n")
    with pool.Pool([sys.executable, str(tmp_path / "serve.py")], {}, str(tmp_path)) as workers:
        first = workers.ask({"x": 2, "sleep": 0}, timeout=30)
        second = workers.ask({"x": 5, "sleep": 0.2}, timeout=30)
        assert first["payload"]["x"] == 4 and second["payload"]["x"] == 10
        assert first["payload"]["pid"] == second["payload"]["pid"]  # one worker, reused
        assert first["seconds"] < 0.4  # not the 0.4 s the worker spent before the request
        assert second["seconds"] >= 0.2  # the call itself is
        with pytest.raises(pool.WorkerGone, match="no answer within 0.4 s"):
            workers.ask({"x": 1, "sleep": 60}, timeout=0.4)
        third = workers.ask({"x": 7, "sleep": 0}, timeout=30)  # a fresh worker after the kill
        assert third["payload"]["x"] == 14 and third["payload"]["pid"] != first["payload"]["pid"]
