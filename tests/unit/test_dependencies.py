"""The dependency floors in pyproject.toml exclude versions with known security holes."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _floors() -> dict[str, Version]:
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    floors = {}
    for line in dependencies:
        requirement = Requirement(line)
        lower = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", ">", "==")]
        floors[requirement.name] = max(lower) if lower else Version("0")
    return floors


@pytest.mark.parametrize(("name", "fixed_in"), [("torch", "2.6"), ("nltk", "3.9")])
def test_floor_excludes_the_vulnerable_versions(name: str, fixed_in: str) -> None:
    # torch < 2.6: weights_only=True can be bypassed to run code (CVE-2025-32434); nltk < 3.9: CVE-2024-39705
    assert _floors()[name] >= Version(fixed_in)
