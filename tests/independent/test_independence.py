"""The rule of this package: the independent verifiers import nothing of the repository."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
VERIFIERS = ["ledger_verifier.py", "qr_verifier.py", "keyring_verifier.py"]
REPOSITORY_PACKAGES = {"keys", "verifier", "ledger", "api"}
# Besides the standard library: the project's dependencies these modules may use, and each other.
ALLOWED_THIRD_PARTY = {"nacl", "cbor2", "httpx"}
ALLOWED_SIBLINGS = {"tests.independent.ledger_verifier", "tests.independent.qr_verifier"}


def imported_modules(path: Path) -> list[str]:
    """Every module an ``import`` or ``from ... import`` names, anywhere in the file (also inside
    functions and ``if TYPE_CHECKING``), plus ``__import__``/``import_module`` string literals."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolve against this package
                names.append("tests.independent" + (f".{node.module}" if node.module else ""))
            else:
                names.append(node.module or "")
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called in {"__import__", "import_module"} and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.append(first.value)
                else:
                    names.append("<dynamic import>")
    return names


@pytest.mark.parametrize("module", VERIFIERS)
def test_verifier_imports_nothing_of_the_repository(module: str) -> None:
    names = imported_modules(HERE / module)
    assert names, "the scan found no import at all: it is broken"
    repository = [n for n in names if n.split(".")[0] in REPOSITORY_PACKAGES]
    assert not repository, f"{module} imports repository code: {repository}"
    unexpected = [
        n
        for n in names
        if n.split(".")[0] not in sys.stdlib_module_names
        and n.split(".")[0] not in ALLOWED_THIRD_PARTY
        and n not in ALLOWED_SIBLINGS
        and n != "__future__"
    ]
    assert not unexpected, (
        f"{module} imports something that is neither stdlib nor allowed: {unexpected}"
    )


def test_the_scan_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The scan itself catches the forms an import can take."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import json\n"
        "from keys import PrivateKey\n"
        "def f():\n"
        "    import verifier.merkle\n"
        "    return __import__('ledger')\n"
        "from . import api\n",
        encoding="utf-8",
    )
    names = imported_modules(sample)
    assert {"keys", "verifier.merkle", "ledger", "tests.independent"} <= set(names)
    assert [n for n in names if n.split(".")[0] in REPOSITORY_PACKAGES] == [
        "keys",
        "verifier.merkle",
        "ledger",
    ]
