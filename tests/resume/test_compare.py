"""The pure parts: leaf comparison, the data ledger, and the notes the rules write from them."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from pytest_ckpt.resume.compare import Difference, LedgerEntry, leaves, ledger, losses_differ, same
from pytest_ckpt.resume.report import ResumePoint, ResumeReport
from pytest_ckpt.resume.rules import Findings, explain


def test_same_is_bitwise_by_default_and_within_tolerance_when_asked():
    a = torch.tensor([1.0, float("nan")])
    assert same(a, a.clone())  # nan equals nan: the same bits
    assert not same(a, torch.tensor([1.0 + 2**-23, float("nan")]))
    assert same(a, torch.tensor([1.0 + 2**-23, float("nan")]), atol=1e-6)
    assert not same(torch.tensor([1, 2]), torch.tensor([1, 2], dtype=torch.int32))  # dtype differs
    assert not same(3, 3.0) and same(0.1 + 0.2, 0.3, atol=1e-12)
    assert same(np.arange(3), np.arange(3)) and not same(np.arange(3), np.arange(1, 4))


def test_a_float_within_rtol_alone_is_the_same_and_losses_do_not_differ():
    # 1000 vs 1000.5: 5e-4 relative, 0.5 absolute. rtol alone is a tolerance (as pc.diff's is)
    assert same(1000.0, 1000.5, rtol=1e-3) and not same(1000.0, 1000.5, rtol=1e-4)
    assert not losses_differ(1000.0, 1000.5, atol=0.0, rtol=1e-3)
    assert losses_differ(1000.0, 1000.5, atol=0.0, rtol=1e-4)


def test_leaves_names_each_differing_leaf_and_what_is_absent():
    exp = {"epoch": 1, "index": 3, "order": torch.arange(4), "extra": 1}
    act = {"epoch": 1, "index": 0, "order": torch.arange(4)}
    assert [(w, e, repr(a)) for w, e, a in leaves(exp, act)] == [("index", 3, "0"), ("extra", 1, "absent")]


def test_the_ledger_says_where_each_other_batch_came_from():
    exp = ["a", "b", "c", "d", "e", "f"]
    assert ledger(exp, ["a", "b", "c", "a", "b", "c"], 3) == [
        LedgerEntry(4, 1, "repeated"), LedgerEntry(5, 2, "repeated"), LedgerEntry(6, 3, "repeated")]
    assert ledger(exp, ["a", "b", "c", "f", "x", "y"], 3) == [
        LedgerEntry(4, 6, "skipped"), LedgerEntry(5, None, "unseen"), LedgerEntry(6, None, "unseen")]
    # the position restarted one batch back: each batch is the one the uninterrupted run saw a step earlier
    assert ledger(exp, ["a", "b", "c", "c", "d", "e"], 3) == [
        LedgerEntry(4, 3, "repeated"), LedgerEntry(5, 4, "repeated"), LedgerEntry(6, 5, "repeated")]
    assert ledger(exp, exp, 3) == [] and ledger([None] * 6, [None] * 6, 3) == []


def data_note(at, ledger_entries, steps=6, **kw):
    return explain(Findings(at=at, steps=steps, ledger=ledger_entries, divergence=(ledger_entries[0].step, "batch"),
                            **kw))


def test_data_taken_from_elsewhere_with_nothing_else_to_explain_it_is_a_data_cause():
    [note] = data_note(3, [LedgerEntry(4, 1, "repeated"), LedgerEntry(5, 2, "repeated")])
    assert note.kind == "resume-data"
    assert note.text == ("The resumed run trained at step 4 on the batch the uninterrupted run saw at step 1 "
                         "(repeated data: the position restarts); 2 of 3 resumed steps trained on another batch")
    [note] = data_note(3, [LedgerEntry(4, 6, "skipped")])
    assert "saw at step 6 (skipped data: the position runs ahead)" in note.text
    [note] = data_note(3, [LedgerEntry(5, None, "unseen")])
    assert note.text.startswith("From step 5 the resumed run trains on batches the uninterrupted run never saw "
                                "(reshuffled data)")


def test_a_reshuffle_is_the_consequence_of_the_generator_that_was_not_restored():
    generator = Difference("run.sampler.generator", "generator", [("", 1, 2)], 1, untouched=True)
    notes = data_note(3, [LedgerEntry(7, 1, "repeated")], steps=8, restore=[generator],
                      classes={"run.sampler.generator": "Generator"})
    assert [n.kind for n in notes] == ["resume-rng"]
    assert notes[0].text.startswith("run.sampler.generator (Generator) is not restored: after load it is where "
                                    "start left it; consequence: from step 7 the resumed run trains on other "
                                    "batches than the uninterrupted run (reshuffled data")


def test_nothing_seen_after_load_yet_a_later_step_differs_is_hidden_state():
    [note] = explain(Findings(at=2, steps=4, divergence=(3, "loss"),
                              compared={"run.model": "module", "run.opt": "optimizer"}))
    assert note.kind == "resume-hidden-state"
    assert note.text.startswith("everything compared matched after load (run.model, run.opt), yet step 3 differs")


def test_to_dict_writes_non_finite_losses_as_text():
    nan = float("nan")
    report = ResumeReport(steps=2, at=1, losses=[1.0, nan],
                          points=[ResumePoint(1, [1.0, math.inf], {"step": 2, "what": "loss", "expected": nan,
                                                                    "actual": math.inf})])
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["losses"] == [1.0, "nan"] and data["resumed_losses"] == [1.0, "inf"]
    assert data["points"][0]["divergence"]["actual"] == "inf"
    assert str(report).startswith("resume after step 1 differs from the uninterrupted run from step 2: "
                                  "loss inf resumed vs nan uninterrupted")
