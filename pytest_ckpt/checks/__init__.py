"""Every check a marker runs, as a library call (API section 6): the trainer checks in
:mod:`.trainers`."""
