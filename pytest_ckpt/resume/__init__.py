"""Resume equivalence: training that stops and resumes is the training that never stopped.

``pc.check_resume`` (in :mod:`.check`) runs the project's own start/step/save/load three ways;
``pc.run_state`` (in :mod:`.state`) lists what it compares. The modules, top to bottom:
check (orchestration) -> runner (calls the project's code), child (the same in a fresh process)
-> evidence (what a failure gathers to tell a root from its consequences) -> rules (one cause, one
note, consequences folded into their root), saved (what the checkpoint holds) -> compare (pure comparisons)
-> capture (state as data) -> state, streams (what a run holds); report and render (the result, as
data and as text).
"""
