"""Importing pytest_ckpt (and reaching pc.check_resume_hf / pc.check_resume_lightning) imports no
framework: only the session modules import transformers or lightning, and only the checks' bodies
import those."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest_ckpt

PACKAGE = Path(pytest_ckpt.__file__).parent
FRAMEWORKS = ("transformers", "lightning", "pytorch_lightning", "accelerate", "peft")
#: the modules that import a framework when imported: reached only from inside a check's call
SESSIONS = {"pytest_ckpt.checks.trainers.hf_session", "pytest_ckpt.checks.trainers.lightning_session"}


def top_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (not inside functions or TYPE_CHECKING)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if isinstance(sub, ast.Import):
                out.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - sub.level + 1] if sub.level else []
                name = ".".join([*base, sub.module] if sub.module else base)
                out.add(name)
                out.update(f"{name}.{a.name}" for a in sub.names)
    return out


def test_no_module_but_the_sessions_imports_a_framework_when_imported():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        imports = top_level_imports(path)
        frameworks = {i for i in imports if i.split(".")[0] in FRAMEWORKS}
        if frameworks and module not in SESSIONS:
            found[module] = sorted(frameworks)
        if imports & SESSIONS:
            found[module] = sorted(imports & SESSIONS)
    assert not found, f"imported when pytest_ckpt is: {found}"
    assert all((PACKAGE / "checks" / "trainers" / f"{m.rpartition('.')[2]}.py").exists() for m in SESSIONS)
