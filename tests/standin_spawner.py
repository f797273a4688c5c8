"""A JupyterHub Spawner whose servers are the stand-in backend's ports (tests/standin.py).

`start()` hands out the configured ports in turn and returns at once; `poll()` says
"running" for as long as the hub believes it started the server, so a restarted hub
re-adopts every stand-in server as it would real ones. Loaded by the hub process only.
"""

from __future__ import annotations

import itertools
from typing import Any

from jupyterhub.spawner import Spawner
from traitlets import Int, List

_turn = itertools.count()


class StandInSpawner(Spawner):
    ports = List(Int(), help="the stand-in backend's ports, handed out in turn").tag(config=True)

    running = False

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.running = bool(state.get("standin"))

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.running:
            state["standin"] = True
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.running = False

    async def start(self) -> tuple[str, int]:
        self.running = True
        return "127.0.0.1", self.ports[next(_turn) % len(self.ports)]

    async def poll(self) -> int | None:
        return None if self.running else 0

    async def stop(self, now: bool = False) -> None:
        self.running = False
