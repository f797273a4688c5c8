"""The hub's side of its log stream (the block of the generated config) against a real
FIFO: lines reach hubsvc, a stalled hubsvc never blocks the hub, nothing is inherited."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from hubsvc import hubconfig
from hubsvc.hublog import HubLog

HUB_SIDE = '''
import json, logging, os as _os, subprocess, sys
_H = json.loads(sys.argv[1])
def _secret(path):
    with open(path) as f:
        return f.read().strip()
handler = logging.StreamHandler()  # created before the block, as the hub's own is
log = logging.getLogger("JupyterHub")
log.addHandler(handler)
log.setLevel(logging.INFO)
exec(compile(_H["block"], "generated", "exec"))
for i in range(int(sys.argv[2])):
    log.info("302 GET /hub/ -> /hub/ (u1@127.0.0.1) 0.5ms #%d", i)
log.info("x" * 10000)
child = subprocess.run(["/bin/ls", "-l", "/proc/self/fd/"], capture_output=True, text=True)
print(json.dumps({"dropped": getattr(_hubsvc_log, "dropped", None), "child_fds": child.stdout}))
'''


def _hub(tmp_path: Path, lines: int) -> subprocess.CompletedProcess[str]:
    secret = tmp_path / "cookie"
    secret.write_text("c" * 64)
    settings = {"hub_log_fifo": str(tmp_path / "hub-log.fifo"), "cookie_secret_file": str(secret),
                "block": hubconfig.hub_log_block()}
    return subprocess.run([sys.executable, "-c", HUB_SIDE, json.dumps(settings), str(lines)],
                          capture_output=True, text=True, timeout=60)


def test_lines_reach_hubsvc_and_a_copy_goes_to_stderr(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], subprocess.CompletedProcess[str]]:
        got: list[str] = []
        hl = HubLog(tmp_path, relay=False)
        hl.consumers.append(got.append)
        hl.open(asyncio.get_running_loop())
        try:
            r = await asyncio.to_thread(_hub, tmp_path, 50)
            for _ in range(50):
                await asyncio.sleep(0.02)
        finally:
            hl.close()
        return got, r

    got, r = asyncio.run(main())
    assert r.returncode == 0, r.stderr
    assert [ln for ln in got if ln.startswith("302 GET")] == [
        f"302 GET /hub/ -> /hub/ (u1@127.0.0.1) 0.5ms #{i}" for i in range(50)]
    assert max(len(ln) for ln in got) < 4096  # one write per line, atomic in a pipe
    assert r.stderr.count("302 GET /hub/") == 50  # the journal/output copy
    out = json.loads(r.stdout)
    assert out["dropped"] == 0
    assert "hub-log.fifo" not in out["child_fds"]  # close-on-exec: not in a spawned process


def test_a_stalled_reader_never_blocks_the_hub(tmp_path: Path) -> None:
    """hubsvc holds the FIFO open but does not read (SIGSTOPped): the hub goes on,
    dropping what does not fit."""
    loop = asyncio.new_event_loop()
    hl = HubLog(tmp_path, relay=False)
    hl.open(loop)  # never run: nobody reads
    try:
        r = _hub(tmp_path, 20_000)  # ~1 MB of lines, far more than a pipe holds
    finally:
        hl.close()
        loop.close()
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dropped"] > 0


def test_no_reader_means_stderr_only(tmp_path: Path) -> None:
    r = _hub(tmp_path, 5)  # no FIFO at all: a hub not run by hubsvc
    assert r.returncode == 0 and r.stderr.count("302 GET") == 5


def test_emptied_cookie_secret_stops_the_hub(tmp_path: Path) -> None:
    secret = tmp_path / "cookie"
    secret.write_text("")
    settings = {"hub_log_fifo": str(tmp_path / "none"), "cookie_secret_file": str(secret),
                "block": hubconfig.hub_log_block()}
    r = subprocess.run([sys.executable, "-c", HUB_SIDE.replace("secret.write_text", ""),
                        json.dumps(settings), "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "is empty or short" in r.stderr
