"""What the instance installs covers what the runtime imports: every module, named, from the source itself."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

from tools.paths import REPO

LOCKS = ("requirements/runtime.lock", "requirements/runtime-cuda.lock")


def third_party_imports(folder: Path) -> dict[str, str]:
    """{top-level module: first file importing it} for every absolute import under `folder` outside the stdlib."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("runtime", "__future__"):
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def locked_distributions() -> set[str]:
    text = "".join((REPO / lock).read_text() for lock in LOCKS)
    return {re.sub(r"[-_.]+", "-", name).lower() for name in re.findall(r"^([A-Za-z0-9._-]+)==", text, re.M)}


def test_every_third_party_module_the_runtime_imports_is_installed_by_the_instance():
    providers = importlib.metadata.packages_distributions()
    locked = locked_distributions()
    uncovered = {
        module: where
        for module, where in third_party_imports(REPO / "runtime").items()
        if not {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [])} & locked
    }
    assert not uncovered, (
        f"runtime/ imports modules the instance does not install (requirements/runtime.txt): {uncovered}"
    )


def test_the_import_scan_sees_numpy_which_the_first_instance_lacked():
    assert third_party_imports(REPO / "runtime")["numpy"] == "runtime/images/preprocess.py"


def test_every_direct_runtime_requirement_is_in_the_lock_at_its_pinned_version():
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", (REPO / "requirements/runtime.txt").read_text(), re.M)
    text = "".join((REPO / lock).read_text() for lock in LOCKS)
    for name, version in pins:
        assert re.search(rf"^{re.escape(name)}=={re.escape(version)} \\$", text, re.M | re.I), name
