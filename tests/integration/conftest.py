from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .hubsvc_harness import Instance, new_root


@pytest.fixture
def make_hubsvc(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Factory: make_hubsvc(overrides={"section": {...}}, hub_extra="", start=True).
    Every instance is stopped and everything it started is ended after the test."""
    made: list[tuple[Instance, Path]] = []

    def factory(overrides: dict[str, dict[str, Any]] | None = None, hub_extra: str = "",
                start: bool = True) -> Instance:
        root = new_root()
        inst = Instance(root, overrides=overrides or {}, hub_extra=hub_extra)
        made.append((inst, root))
        if start:
            inst.start()
        return inst

    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for inst, root in made:
        inst.cleanup()
        if failed:
            print(f"--- hubsvc log ({root}) ---\n{inst.log_text()[-6000:]}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hubsvc(make_hubsvc: Any) -> Instance:
    """A running hubsvc (READY) on free loopback ports."""
    return make_hubsvc()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
