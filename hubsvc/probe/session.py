"""A hub login session for USER, made by hubsvc from what it owns: the hub's cookie
secret (state_dir, 0600) and the hub's database (state_dir, sqlite; hubsvc sets db_url).

JupyterHub 6.1.1 accepts as logged in any request whose `jupyterhub-hub-login` cookie is
tornado's signed value of the user's `cookie_id` under the cookie secret. So hubsvc can
walk any user's flow exactly as that user's browser does after the login form or the
identity provider, without knowing a password. The cookie never leaves this process except
towards the public URL's origin (see cookies.py), and it is only as powerful as the
user's own browser session; it dies with the walk (nothing is stored hub-side).
"""

from __future__ import annotations

import binascii
import sqlite3
from pathlib import Path

from tornado.web import create_signed_value

from ..config import Config
from ..secrets import SecretFiles
from .cookies import Cookie
from .model import ProbeUsageError
from .urls import host_of, origin_of

HUB_LOGIN_COOKIE = "jupyterhub-hub-login"
DB_NAME = "jupyterhub.sqlite"  # hubconfig.py points db_url here


def cookie_secret(cfg: Config) -> bytes:
    path = SecretFiles.in_dir(cfg.paths.state_dir).cookie_secret
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise ProbeUsageError(
            f"cannot read the hub's cookie secret {path} ({e.strerror}); run probe-spawn as "
            "root or as the service account, with the same --config as `hubsvc run`"
        ) from None
    try:
        return binascii.a2b_hex(text)
    except (binascii.Error, ValueError):
        raise ProbeUsageError(f"{path} does not hold a hex cookie secret") from None


def cookie_id(cfg: Config, user: str) -> str:
    db = Path(cfg.paths.state_dir) / DB_NAME
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("select cookie_id from users where name = ?", (user,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise ProbeUsageError(f"cannot read the hub's database {db}: {e}") from None
    if not row or not row[0]:
        raise ProbeUsageError(f"the hub has no user {user!r}; they must log in once first")
    return str(row[0])


def login_cookie(cfg: Config, user: str, host_prefix: bool = False) -> Cookie:
    """The hub's login cookie for USER as the hub itself sets it after a login: host-only
    on the public URL's host, Path = the hub's base URL. With
    c.JupyterHub.cookie_host_prefix_enabled the hub names it `__Host-jupyterhub-hub-login`
    and sets it Secure on Path=/ (app.py, handlers/base.py _set_cookie); tornado signs the
    value with the name, so the name must be the hub's."""
    name = ("__Host-" if host_prefix else "") + HUB_LOGIN_COOKIE
    value = create_signed_value(cookie_secret(cfg), name, cookie_id(cfg, user))
    pub = cfg.public.connect_origin
    return Cookie(name, value.decode(), host_of(pub), True,
                  "/" if host_prefix else cfg.public.path + "hub/", secure=host_prefix,
                  http_only=True, origin=origin_of(pub))
