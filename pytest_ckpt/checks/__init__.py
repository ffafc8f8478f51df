"""Every check a marker runs, as a library call: the round trip and its variations, the interrupted
check, the resume variations and the trainer checks (``pytest_ckpt.check_roundtrip``, ...)."""
