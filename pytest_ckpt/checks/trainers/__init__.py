"""The resume check through a framework's own trainer: its own checkpoint writing, its own resume.

``pc.check_resume_hf`` (:mod:`.hf`) and ``pc.check_resume_lightning`` (:mod:`.lightning`) run
``pc.check_resume`` over the framework's training call, driven one step at a time
(:mod:`.driven`, :mod:`.stepped`); each framework's session (:mod:`.hf_session`,
:mod:`.lightning_session`) says what its run holds, and its fixes (:mod:`.hf_fixes`,
:mod:`.lightning_fixes`) put the causes in its words. Neither framework is imported before its
check runs.
"""
