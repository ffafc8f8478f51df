"""Reports for a person (text) and for tools (JSON): a diff, a checkpoint's description, a run."""
