"""User and server names go into API paths quoted whole."""

from __future__ import annotations

import pytest

from hubsvc.hubapi import server_path


@pytest.mark.parametrize("user,name,want", [
    ("alice", "", "users/alice/server"),
    ("alice", "gpu", "users/alice/servers/gpu"),
    ("a/../bob", "", "users/a%2F..%2Fbob/server"),
    ("eve?x=1#", "", "users/eve%3Fx%3D1%23/server"),
    ("carol", "../../proxy", "users/carol/servers/..%2F..%2Fproxy"),
    ("dan@example.org", "x y", "users/dan%40example.org/servers/x%20y"),
])
def test_names_are_quoted_whole(user: str, name: str, want: str) -> None:
    assert server_path(user, name) == want
