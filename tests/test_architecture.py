"""The boundary between the Django side and the inference package holds."""
from __future__ import annotations

import ast
from pathlib import Path

import inference

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = ("chat", "waiproject", "bench")


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import statement in ``path``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_the_inference_package_never_imports_django() -> None:
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "inference").rglob("*.py")
                 for m, _ in imports(p) if m == "django" or m.startswith("django.")]
    assert offenders == []


def test_outside_code_uses_only_the_public_api_of_inference() -> None:
    offenders = []
    for package in OUTSIDE:
        for path in (ROOT / package).rglob("*.py"):
            for module, names in imports(path):
                where = f"{path.relative_to(ROOT)}: {module}"
                if module.startswith("inference."):
                    offenders.append(f"{where} (a private module)")
                elif module == "inference":
                    offenders += [f"{where}.{n} (not in __all__)" for n in names if n not in inference.__all__]
    assert offenders == []


def test_every_public_name_resolves() -> None:
    for name in inference.__all__:
        assert getattr(inference, name) is not None
