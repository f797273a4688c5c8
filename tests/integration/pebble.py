"""Debian's pebble (the ACME test CA Let's Encrypt publishes) on loopback, for tests: its own
https certificate comes from a throwaway CA made in the test; http-01 validation is real
(PEBBLE_VA_ALWAYS_VALID=0) against the port the test names."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.tlsca import CA

from .hubsvc_harness import free_port

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"


@dataclass
class Pebble:
    root: Path
    http_port: int  # where pebble's validator fetches http-01 challenges
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = free_port()
        self.mgmt_port = free_port()
        ca = CA()
        d = self.root / "pebble"
        cert, key = ca.write(d, ca.server("127.0.0.1", "localhost"))
        self.ca_file = ca.write_root(d / "root.pem")
        self.config = d / "pebble-config.json"
        self.config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": self.http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        self.log = d / "pebble.log"

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self, timeout: float = 30) -> Pebble:
        env = {**os.environ, "PEBBLE_VA_ALWAYS_VALID": "0", "PEBBLE_VA_NOSLEEP": "1",
               "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
        self.proc = subprocess.Popen([PEBBLE, "-config", str(self.config)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"pebble did not listen within {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def issuer_roots(self) -> bytes:
        """Pebble's own (ephemeral) issuing root, from its management port."""
        import httpx

        with httpx.Client(trust_env=False, verify=False, timeout=10) as c:
            return c.get(f"https://127.0.0.1:{self.mgmt_port}/roots/0").content
