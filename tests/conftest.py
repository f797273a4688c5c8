"""Each test is marked by the folder it lives in, so every group runs on its own:
`pytest -m unit`, `-m integration`, `-m system`, `-m slurm`, `-m security`, `-m chaos`."""

from __future__ import annotations

from pathlib import Path

import pytest

_GROUPS = ("unit", "integration", "system", "slurm", "security", "chaos")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for group in _GROUPS:
            if group in parts:
                item.add_marker(getattr(pytest.mark, group))
