"""ProbeToken: the token of a token walk is revoked on every way out, also when the
caller is cancelled while the hub is making it (pure logic, a fake hub API)."""

from __future__ import annotations

import asyncio
from typing import Any

from hubsvc.probe.spawn import ProbeToken, to_the_end


class FakeHub:
    """Makes the token at once, answers after `answer` is set (or fails to answer)."""

    def __init__(self, answer_fails: bool = False) -> None:
        self.tokens: dict[str, str] = {}  # id -> note
        self.answer = asyncio.Event()
        self.answer_fails = answer_fails

    async def mint_token(self, user: str, expires_in: int, note: str = "",
                         released: Any = None) -> tuple[str, str]:
        tid = f"a{len(self.tokens)}"
        self.tokens[tid] = note
        await self.answer.wait()
        if self.answer_fails:
            raise TimeoutError("the hub's answer was lost")
        return "secret", tid

    async def delete_token(self, user: str, tid: str) -> bool:
        self.tokens.pop(tid, None)
        return True

    async def tokens_with_note(self, user: str, note: str) -> list[str]:
        return [t for t, n in self.tokens.items() if n == note]


async def _interrupt_during_mint(hub: FakeHub) -> None:
    lease = ProbeToken(hub, "u", 60)  # type: ignore[arg-type]

    async def probe() -> None:
        try:
            await lease.mint()
        finally:
            await to_the_end(lease.revoke())

    task = asyncio.create_task(probe())
    for _ in range(100):
        if hub.tokens:
            break
        await asyncio.sleep(0)
    assert hub.tokens  # the hub has made it, the probe has not read its id
    task.cancel()  # Ctrl-C
    await asyncio.sleep(0)
    hub.answer.set()
    try:
        await asyncio.wait_for(task, 5)
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed")


def test_cancel_during_mint_revokes_by_id() -> None:
    hub = FakeHub()
    asyncio.run(_interrupt_during_mint(hub))
    assert hub.tokens == {}


def test_cancel_during_mint_whose_answer_is_lost_revokes_by_note() -> None:
    hub = FakeHub(answer_fails=True)
    other_note = {"b0": "hubsvc probe-spawn 1-other"}  # another run's token stays
    hub.tokens.update(other_note)
    asyncio.run(_interrupt_during_mint(hub))
    assert hub.tokens == other_note


def test_second_cancel_does_not_stop_the_revocation() -> None:
    async def main() -> list[str]:
        done: list[str] = []

        async def slow_cleanup() -> None:
            await asyncio.sleep(0.05)
            done.append("revoked")

        async def probe() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                await to_the_end(slow_cleanup())

        t = asyncio.create_task(probe())
        await asyncio.sleep(0)
        t.cancel()
        await asyncio.sleep(0.01)
        t.cancel()  # a second Ctrl-C while cleaning up
        try:
            await t
        except asyncio.CancelledError:
            pass
        return done

    assert asyncio.run(main()) == ["revoked"]
