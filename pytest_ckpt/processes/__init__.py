"""Running code elsewhere: child processes that die with their parent, rank pools, the launched
world, crash injection at file boundaries. Used by :mod:`pytest_ckpt.checks` and
:mod:`pytest_ckpt.resume`; imports nothing above :mod:`pytest_ckpt.api`."""
