"""The named mutants of ``make mutation`` (:mod:`mutation`): one realistic one-line slip each, at a
point where pytest-ckpt decides a verdict, with what the slip would let through.

A mutant's ``original`` must occur exactly once in its module: when the code changes under it, the
driver stops naming the mutant, and the mutant is updated here (keep it on the decision, not on
the wording around it). ``TESTS`` maps each module to the tests that should kill its mutants, the
most specific first; a mutant's own ``tests`` run before those.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    """``module`` (from the repository root) with ``original`` replaced by ``replacement``."""

    name: str
    module: str
    original: str
    replacement: str
    #: the slip, and what it would let through (a false pass, a false refusal, a wrong cause)
    why: str
    tests: tuple[str, ...] = ()


def doctests(module: str) -> str:
    """The test that runs ``module``'s docstring examples."""
    return f"tests/test_doctests.py::test_docstring_examples[{module}]"


ORIGIN = "pytest_ckpt/compare/origin.py"
VALUES = "pytest_ckpt/compare/values.py"
COMPARE = "pytest_ckpt/compare/compare.py"
DIFF = "pytest_ckpt/compare/diff.py"
BLOCKS = "pytest_ckpt/compare/rules/blocks.py"
TENSORS = "pytest_ckpt/compare/rules/tensors.py"
LATEST = "pytest_ckpt/checkpoint/latest.py"
HF_DIR = "pytest_ckpt/formats/hf_dir.py"
CANONICAL = "pytest_ckpt/checkpoint/canonical.py"
ZIPCHECK = "pytest_ckpt/formats/zipcheck.py"
ZIPDIR = "pytest_ckpt/formats/zipdir.py"
CHECKSUM = "pytest_ckpt/formats/checksum.py"
STRICT_JSON = "pytest_ckpt/formats/strict_json.py"
SAFE_GLOBALS = "pytest_ckpt/formats/safe_globals.py"
PICKLE_SCAN = "pytest_ckpt/formats/pickle_scan.py"
RESUME_COMPARE = "pytest_ckpt/resume/compare.py"
RULES = "pytest_ckpt/resume/rules.py"
EVIDENCE = "pytest_ckpt/resume/evidence.py"

_DIFFS = ("tests/compare/test_diagnose.py", "tests/compare/test_compare.py", "tests/test_api.py",
          "tests/compare/test_load_side.py")
_ZIPS = ("tests/formats/test_zip_as_torch_reads.py", "tests/formats/test_hostile_input.py",
         "tests/formats/test_formats_errors.py")
_RESUME = ("tests/resume/test_compare.py", "tests/resume/test_projects.py", "tests/resume/test_check.py")

#: module -> the tests that should kill its mutants, the most specific first (all of them in ``make test``)
TESTS: dict[str, tuple[str, ...]] = {
    ORIGIN: ("tests/compare/test_origin.py", doctests("pytest_ckpt.compare.origin")),
    VALUES: ("tests/compare/test_values.py", "tests/test_api.py", "tests/compare/test_compare.py",
             doctests("pytest_ckpt.compare.values")),
    COMPARE: (*_DIFFS, doctests("pytest_ckpt.compare.compare")),
    DIFF: _DIFFS,
    BLOCKS: _DIFFS,
    TENSORS: _DIFFS,
    LATEST: ("tests/checkpoint/test_latest.py", "tests/plugin/test_interrupted.py"),
    HF_DIR: ("tests/checkpoint/test_latest.py", "tests/formats/test_formats_sharded.py", "tests/formats/test_formats_errors.py",
             "tests/formats/test_hostile_input.py", "tests/test_api.py"),
    CANONICAL: ("tests/checkpoint/test_canonical.py", "tests/compare/test_load_error.py", "tests/test_api.py",
                doctests("pytest_ckpt.checkpoint.canonical")),
    ZIPCHECK: _ZIPS,
    ZIPDIR: _ZIPS,
    CHECKSUM: ("tests/formats/test_zip_as_torch_reads.py", "tests/formats/test_formats_write.py",
               "tests/formats/test_formats_read.py", doctests("pytest_ckpt.formats.checksum")),
    STRICT_JSON: ("tests/formats/test_safetensors_header.py", "tests/formats/test_hostile_input.py",
                  doctests("pytest_ckpt.formats.strict_json")),
    SAFE_GLOBALS: ("tests/formats/test_safe_globals.py", "tests/formats/test_formats_safety.py",
                   doctests("pytest_ckpt.formats.safe_globals")),
    PICKLE_SCAN: ("tests/formats/test_formats_safety.py", "tests/formats/test_safe_globals.py",
                  "tests/formats/test_hostile_input.py", "tests/formats/test_formats_dtensor.py"),
    RESUME_COMPARE: (*_RESUME, doctests("pytest_ckpt.resume.compare")),
    RULES: _RESUME,
    EVIDENCE: _RESUME,
}

#: what runs a mutant the targeted tests do not kill: make test's pytest, whole
WIDER = ("tests",)

MUTANTS: tuple[Mutant, ...] = (
    # -- the interrupted judge: which checkpoint a load after a killed save returned
    Mutant("origin-mixed-as-new", ORIGIN,
           'return "mixed"', 'return "new"',
           'a load that mixes the previous and the new checkpoint judged "new": a torn multi-shard save '
           'passes (issue 27)'),
    Mutant("origin-missing-ignored", ORIGIN,
           "if not self.neither and not self.missing and not self.extra:",
           "if not self.neither and not self.extra:",
           'tensors the load did not return are not counted: a load that lost a shard of the new '
           'checkpoint judged "new"'),
    Mutant("origin-one-side-not-neither", ORIGIN,
           "elif name in a or name in b:", "elif name in a and name in b:",
           'a tensor only one checkpoint holds, loaded with other values, counted nowhere: the load '
           'judged that checkpoint'),
    Mutant("origin-same-as-previous", ORIGIN,
           "if in_a and in_b:\n            same += 1", "if in_a and in_b:\n            from_a += 1",
           'a tensor equal in both checkpoints counted as the previous one\'s: a whole load of the new '
           'checkpoint judged "mixed"'),

    # -- values: exact by default, atol/rtol when asked
    Mutant("values-rtol-ignored", VALUES,
           "if atol or rtol:\n        return _close_diff(a, b, atol, rtol)\n",
           "if atol:\n        return _close_diff(a, b, atol, rtol)\n",
           'a tolerance given as rtol alone ignored: pc.diff({"w": 1000.}, {"w": 1000.5}, rtol=1e-3) '
           'fails (issue 27)'),
    Mutant("values-same-rtol-ignored", VALUES,
           "if atol or rtol:\n        return _close_diff(a, b, atol, rtol) is None",
           "if atol:\n        return _close_diff(a, b, atol, rtol) is None",
           "the early-stopping equality (the resume check's and the cast rule's) ignores rtol alone: a "
           "resume compared with rtol=1e-3 fails on a difference within it"),
    Mutant("values-zero-difference-equal", VALUES,
           "for d in _piece_diffs(a, pieces) if d is not None)",
           "for d in _piece_diffs(a, pieces) if d)",
           "a difference of 0.0 read as none: a weight whose sign flipped at zero (-0.0 for 0.0) passes"),
    Mutant("values-nan-against-number", VALUES,
           "both_nan = fa.isnan() & fb.isnan()\n        fa, fb = fa[~both_nan]",
           "both_nan = fa.isnan() | fb.isnan()\n        fa, fb = fa[~both_nan]",
           "NaN against a number read as NaN against NaN: a weight that turned NaN passes"),
    Mutant("values-batch-rows-all", VALUES,
           "return flat_a.ne(flat_b).any(1)", "return flat_a.ne(flat_b).all(1)",
           "in a batch of small tensors only those that differ everywhere are compared: one changed "
           "element of a bias passes"),
    Mutant("values-chunk-break", VALUES,
           "if torch.equal(ca.view(ints), cb.view(ints)):\n            continue",
           "if torch.equal(ca.view(ints), cb.view(ints)):\n            break",
           "the exact scan stops at the first equal chunk: a change past the first 256K elements of a "
           "large tensor passes"),
    Mutant("values-tolerance-nan", VALUES,
           "rtol=rtol, atol=atol, equal_nan=True", "rtol=rtol, atol=atol, equal_nan=False",
           "with a tolerance, NaN against NaN at the same place differs: a checkpoint that holds NaN by "
           "design fails"),

    # -- the diff's verdict, its dtype and tie rules, its causes
    Mutant("diff-ok-ignores-dtype", DIFF,
           "self.missing or self.unexpected or self.shape or self.dtype",
           "self.missing or self.unexpected or self.shape",
           "a dtype change alone is no difference (values are compared at equal dtypes only): a float16 "
           "checkpoint of a float32 model passes"),
    Mutant("compare-dtype-sides", COMPARE,
           "diff.dtype[name] = (e.dtype, a.dtype)", "diff.dtype[name] = (a.dtype, e.dtype)",
           "a dtype difference recorded the other way round: the report says the model holds the "
           "checkpoint's dtype"),
    Mutant("compare-tie-pairs", COMPARE,
           "if len(present) < 2:", "if len(present) <= 2:",
           "a tie group of two names never checked: an lm_head tied to the embeddings, stored as two "
           "tensors, passes"),
    Mutant("blocks-lacking-reversed", BLOCKS,
           "lacking = sorted(set(e_blocks) - set(a_blocks))", "lacking = sorted(set(a_blocks) - set(e_blocks))",
           "the blocks a checkpoint lacks taken from the wrong side: a checkpoint of fewer layers gets no "
           "layer-count cause"),
    Mutant("blocks-config-field-swapped", BLOCKS,
           "if cfg_get(ac, name) == n_ckpt and cfg_get(ec, name) == n_model:",
           "if cfg_get(ac, name) == n_model and cfg_get(ec, name) == n_ckpt:",
           "the config field matched against the other side's block count: the layer-count cause no "
           "longer names num_hidden_layers"),
    Mutant("blocks-tail-late", BLOCKS,
           "tail = [i for i in indices if i >= first]", "tail = [i for i in indices if i > first]",
           "the cut-off tail of blocks starts one block late: an interrupted save is not named as one"),
    Mutant("tensors-dtype-sides", TENSORS,
           "en, an = dtype_name(e), dtype_name(a)", "en, an = dtype_name(a), dtype_name(e)",
           "the dtype cause names the two dtypes the other way round, and its fix casts the wrong way"),

    # -- latest_complete: the newest complete checkpoint of a directory
    Mutant("latest-step-as-text", LATEST,
           "self.numbers = tuple(int(n) for n in _NUMBER.findall(stem))",
           "self.numbers = tuple(_NUMBER.findall(stem))",
           "step numbers compared as text: of step-8, step-9 and step-10, step-9 is the newest (issue 27)"),
    Mutant("latest-mtime-before-step", LATEST,
           "main.sort(key=lambda c: (c.numbers, c.mtime), reverse=True)",
           "main.sort(key=lambda c: (c.mtime, c.numbers), reverse=True)",
           "ordered by modification time before the step: an older checkpoint copied or touched later is "
           "resumed from"),
    Mutant("latest-two-numbers-by-name", LATEST,
           "if len(main[0].numbers) > 1 and len(main) > 1",
           "if len(main[0].numbers) > 2 and len(main) > 1",
           "names holding two numbers ordered by the numbers, not by the step each checkpoint stores"),
    Mutant("latest-outsider-by-age-reversed", LATEST,
           "return a.mtime > b.mtime", "return a.mtime < b.mtime",
           "a checkpoint outside the names' pattern (last.pt) placed by age the other way round"),
    Mutant("latest-tensors-all", LATEST,
           "return any(_any_tensor(v, depth + 1) for v in tree.values())",
           "return all(_any_tensor(v, depth + 1) for v in tree.values())",
           "a checkpoint holds tensors only when every entry is one: a {model, step} save refused as empty"),
    Mutant("latest-missing-reversed", LATEST,
           "missing = sorted(_files(sibling) - _files(path))", "missing = sorted(_files(path) - _files(sibling))",
           "the files a directory lacks taken the other way round: a save killed before optimizer.pt is "
           "returned as complete"),

    # -- Hugging Face directories: what a finished save holds
    Mutant("hf-trainer-state-everywhere", HF_DIR,
           "if trainer and TRAINER_STATE not in names:", "if TRAINER_STATE not in names:",
           "trainer_state.json required of every directory: an intact save_pretrained directory refused"),
    Mutant("hf-staging-one-digit", HF_DIR,
           'STAGING_NAME = re.compile(r"tmp-checkpoint-(\\d+)")', 'STAGING_NAME = re.compile(r"tmp-checkpoint-(\\d)")',
           "a Trainer staging directory past step 9 (tmp-checkpoint-500) not seen as one: a save that never "
           "finished verifies"),
    Mutant("hf-json-config-only", HF_DIR,
           'if name.endswith(".json"):\n            _json_whole(path)',
           'if name.endswith("config.json"):\n            _json_whole(path)',
           "only config files parsed: a torn trainer_state.json verifies"),
    Mutant("hf-state-suffixes", HF_DIR,
           'STATE_SUFFIXES = (".pt", ".pth", ".bin")', 'STATE_SUFFIXES = (".pt", ".bin")',
           "rng_state.pth not checked: a Trainer checkpoint with a torn RNG state verifies"),
    Mutant("hf-trainer-code-accepted", HF_DIR,
           "return name.split(\".\")[0] in _TRAINER_PACKAGES and classify(name) != CODE",
           "return name.split(\".\")[0] in _TRAINER_PACKAGES",
           "a transformers function pickled into training_args.bin accepted as one of the Trainer's "
           "classes: code a load would run"),

    # -- canonical names: which prefixes are a wrapper's
    Mutant("canonical-smallest-only", CANONICAL,
           "if lo.startswith(prefix) and hi.startswith(prefix) and lo != prefix:",
           "if lo.startswith(prefix) and lo != prefix:",
           'a prefix stripped when the smallest key carries it: ["module.w", "zhead.b"] becomes ["", "w"] '
           '(issue 27)'),
    Mutant("canonical-prefix-alone", CANONICAL,
           "if lo.startswith(prefix) and hi.startswith(prefix) and lo != prefix:",
           "if lo.startswith(prefix) and hi.startswith(prefix):",
           'a key that is only the prefix ("module.") stripped to an empty name'),
    Mutant("canonical-most-stripped-wins", CANONICAL,
           "key=lambda n: (len(n._names & target), len(n.stripped))",
           "key=lambda n: (len(n.stripped), len(n._names & target))",
           "the most stripped reading wins over the best match: a model whose own child is called module "
           "loses it"),
    Mutant("canonical-attribute-on-a-tie", CANONICAL,
           "if matched <= len(names & target):", "if matched < len(names & target):",
           "an attribute prefix removed though the names match no better without it: a checkpoint that "
           "matches its model is renamed"),

    # -- torch zips as torch reads them: layout, flags, CRC
    Mutant("zip-crc-compressed-only", ZIPCHECK,
           "if crcs[span.record] != span.crc:", "if crcs[span.record] != span.crc and span.method != STORED:",
           "CRC32 checked on compressed records only: a flipped byte in a tensor's stored data verifies"),
    Mutant("zip-lookup-case-sensitive", ZIPCHECK,
           'return self.spans.get(self._folded.get(name.encode().lower(), ""))', "return self.spans.get(name)",
           "a record looked up by its exact name: an archive whose tensor record is DATA/1 refused, though "
           "torch (miniz) finds it ignoring letter case"),
    Mutant("zip-strong-encryption", ZIPCHECK,
           "if record.flags & (ENCRYPTED | STRONG):", "if record.flags & ENCRYPTED:",
           "a record marked with strong encryption (flag bit 6) verifies: torch.load refuses it"),
    Mutant("zip-local-name-length-only", ZIPCHECK,
           "if n != len(record.name) or head[_LOCAL.size:] != record.name:", "if n != len(record.name):",
           "a local header naming another record of the same length verifies: zipfile refuses the archive"),
    Mutant("zip-case-sensitive", ZIPCHECK,
           "folded = record.name[len(folder):].lower()", "folded = record.name[len(folder):]",
           "two records that differ only in letter case verify: torch (miniz) may read either"),
    Mutant("zip-storage-size-short-only", ZIPCHECK,
           "if span.size != numel * itemsize:", "if span.size < numel * itemsize:",
           "a storage record longer than its tensors' storage verifies"),
    Mutant("zip-extent-without-offset", ZIPCHECK,
           "extent = offset + sum(", "extent = sum(",
           "a tensor's storage offset left out of its extent: a view that reaches past its storage verifies"),
    Mutant("zipdir-directory-attribute", ZIPDIR,
           'return self.name.endswith(b"/") or bool(self.external & 0x10)', 'return self.name.endswith(b"/")',
           "a record marked as a directory by its MS-DOS attribute verifies: torch.load reads none of its "
           "bytes"),
    Mutant("zipdir-multi-disk", ZIPDIR,
           "if total != here or (disk | cd_disk) and (disk != 1 or cd_disk != 1):", "if total != here:",
           "an end record that describes a multi-disk archive verifies: torch cannot read it"),
    Mutant("zipdir-entry-disk", ZIPDIR,
           "if disk == U16 or disk != this_disk and disk != 1:", "if disk == U16:",
           "a directory entry placed on another disk verifies"),
    Mutant("zipdir-end-first-signature", ZIPDIR,
           "at = buf.rfind(END_SIG, 0, min(n, last + 4))", "at = buf.find(END_SIG, 0, min(n, last + 4))",
           "the first end record of the last 4 KiB taken, not the last as miniz takes it: an archive torch "
           "reads as empty (an end record in its comment) verifies"),
    Mutant("crc-restarts", CHECKSUM,
           "return _choose()[1](data, value)", "return _choose()[1](data)",
           "a CRC32 computed in pieces restarts at each piece: a file pc.save writes in pieces fails its "
           "own check"),

    # -- safetensors headers as the safetensors library parses them
    Mutant("json-nan-accepted", STRICT_JSON,
           '{"parse_constant": _constant, "parse_float": parse_float}', '{"parse_float": parse_float}',
           "a header holding NaN or Infinity verifies: the safetensors library refuses it"),
    Mutant("json-out-of-range", STRICT_JSON,
           "if math.isinf(value):", "if math.isnan(value):",
           "a number out of a double's range (1e999) verifies: the safetensors library refuses it"),
    Mutant("json-duplicate-field", STRICT_JSON,
           "if raw.count(_needle(name)) != held[name]:",
           "if raw.count(_needle(name)) < held[name]:",
           "a field named twice in one object (two dtypes) verifies: serde refuses it, Python keeps the last"),
    Mutant("json-surrogate-in-names", STRICT_JSON,
           "            stack.extend(v.keys())\n", "",
           "a lone surrogate escape in a tensor's name verifies: the safetensors library refuses the header"),
    Mutant("json-bool-as-int", STRICT_JSON,
           "return value, not floats and not literal", "return value, not floats",
           "true or false in an integer field (data_offsets) read as 1 or 0: the safetensors library "
           "refuses the header"),

    # -- the safe unpickler's allow-list and the weights_only migration
    Mutant("safe-one-data-class-allows-all", SAFE_GLOBALS,
           "if not refused or any(classify(n) != DATA for n in refused):",
           "if not refused or all(classify(n) != DATA for n in refused):",
           "one data class among the refused globals offers the allow line for all of them, os.system "
           "included"),
    Mutant("safe-numpy-prefix", SAFE_GLOBALS,
           'if name in KNOWN_DATA or name.startswith("numpy.dtypes."):',
           'if name in KNOWN_DATA or name.startswith("numpy."):',
           "every numpy global classed as data: a pickle asking for a numpy function is offered the allow "
           "line"),
    Mutant("safe-any-class-is-data", SAFE_GLOBALS,
           "        return UNKNOWN\n    return CODE if callable(obj)",
           "        return DATA\n    return CODE if callable(obj)",
           "any class of an imported module classed as data: one whose __setstate__ runs code is offered "
           "the allow line"),
    Mutant("scan-user-allowlist-ignored", PICKLE_SCAN,
           "allowed |= set(user())", "allowed |= set()",
           "globals the project allowed with add_safe_globals still refused: a file torch.load reads is "
           "refused as unsafe"),
    Mutant("scan-dtensor-shards-unsaid", PICKLE_SCAN,
           "if any(n.endswith(_SHARD_PLACEMENTS) for n in names):",
           "if all(n.endswith(_SHARD_PLACEMENTS) for n in names):",
           "one rank's shards of an FSDP2 model saved with torch.save said to be a whole distributed view: "
           "that the other ranks' slices are missing goes unsaid"),

    # -- resume: the comparison, the causes, the evidence
    Mutant("resume-float-rtol-ignored", RESUME_COMPARE,
           "if (atol or rtol) else act == exp", "if atol else act == exp",
           "losses and float state compared exactly under rtol alone: a resume within its tolerance fails"),
    Mutant("resume-first-step-skipped", RESUME_COMPARE,
           "for i in range(start, min(len(exp_losses), len(act_losses))):",
           "for i in range(start + 1, min(len(exp_losses), len(act_losses))):",
           "the first resumed step's batch and loss not compared: a divergence is found a step late, or "
           "never"),
    Mutant("resume-ledger-previous-step", RESUME_COMPARE,
           '("repeated" if seen < i + 1 else "skipped")', '("repeated" if seen < i else "skipped")',
           "a batch trained on one step earlier called skipped: a position that restarts is said to run "
           "ahead"),
    Mutant("resume-absent-side", RESUME_COMPARE,
           'absent="resumed" if act is ABSENT else "uninterrupted"',
           'absent="resumed" if exp is ABSENT else "uninterrupted"',
           "a component missing after load said to be missing from the uninterrupted run: the fix says "
           "the opposite"),
    Mutant("resume-int-equals-float", RESUME_COMPARE,
           "return bool(exp == act) and type(exp) is type(act)", "return bool(exp == act)",
           "a counter restored as a float (3.0 for 3), a flag as 1 for True, counted equal"),
    Mutant("resume-optimizer-step-key", RESUME_COMPARE,
           'if key == "step":', 'if key == "steps":',
           "an optimizer step count that differs reported as a value of each parameter, not as the step "
           "count",
           ("tests/resume/test_variations.py::test_fresh_process_finds_a_resume_that_only_works_in_memory",)),
    Mutant("rules-consequence-as-cause", RULES,
           "return [d for d in self.of_kind(*kinds) if d.path not in self.roots]",
           "return self.of_kind(*kinds)",
           "consequences get lines of their own beside their root: a loader's generator named as a second "
           "cause"),
    Mutant("rules-counter-sign", RULES,
           "out.append((d, a - e))", "out.append((d, e - a))",
           "how far a counter is off taken with the wrong sign: the state derived from it is not folded "
           "into the counter"),
    Mutant("rules-ema-and", RULES,
           'ema = d.kind != "module" or d.path not in f.trained',
           'ema = d.kind != "module" and d.path not in f.trained',
           "an EMA kept as a module (no optimizer trains it) told to load the weights strictly, as the "
           "model is, not to save it with the checkpoint"),
    Mutant("rules-reshuffle-boundary", RULES,
           "f.ledger[0].step > f.at + 1)", "f.ledger[0].step >= f.at + 1)",
           "a position that restarts at the first resumed step called a reshuffle: the lost position "
           "goes unnamed"),
    Mutant("rules-replay-off-by-one", RULES,
           "first.seen_at == step + 1)", "first.seen_at == step)",
           "a generator back at the epoch start not linked to the repeated batches: one root becomes "
           "two causes"),
    Mutant("evidence-step-built-set-aside", EVIDENCE,
           "\n                and not (continuation_matches and d.path in differs_at_end)", "",
           "state a step builds set aside after load though it still differs after the last step: an "
           "EMA load never restores passes"),
    Mutant("evidence-nowhere-unsaid", EVIDENCE,
           "if at is not None or not self._partial}", "if at is not None}",
           "state the checkpoint does not hold is not said to be absent from it: the fix to save it is "
           "lost"),
    Mutant("evidence-cast-side", EVIDENCE,
           'else "save" if found[1] == dtype else "load"', 'else "save" if found[1] != dtype else "load"',
           "a save that casts the weights to a lower precision named as the load, and the other way "
           "round"),
    Mutant("evidence-position-off-by-one", EVIDENCE,
           "lost = ledger[0].step - ledger[0].seen_at", "lost = ledger[0].step - ledger[0].seen_at - 1",
           "the batches a restarted position lost counted one short: the fix says to skip too few"),
    Mutant("evidence-copy-any-tensor", EVIDENCE,
           "if exp.keys() == got.keys() and all(same(exp[k], got[k]) for k in exp):",
           "if exp.keys() == got.keys() and any(same(exp[k], got[k]) for k in exp):",
           "a module that holds one tensor equal to the trained model's called its copy: its own cause "
           "folded away"),
)
