"""How long the ranks of a process variation may take, and where a user raises it. Torch-free: the
plugin's options name these at start-up."""

#: seconds the ranks of one job may take, start-up included
DEFAULT_FSDP_TIMEOUT = 180.0
#: the ini key, and the environment variable that overrides it (a CI job can raise it without editing files)
INI_FSDP_TIMEOUT = "ckpt_fsdp_timeout"
ENV_FSDP_TIMEOUT = "PYTEST_CKPT_FSDP_TIMEOUT"
