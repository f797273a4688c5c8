"""probe_spawn: walk USER's flow as their browser does and judge it.

Walk modes (docs/redirect-loops.md):
- session (default): hubsvc makes USER's hub login session from the cookie secret and the
  database it owns (session.py), opens the public URL's login page and is sent on exactly
  as a freshly logged-in browser: landing (the hub's default_url), spawn, spawn-pending
  (following the progress API as the page does), the server, the OAuth authorize and
  callback hops, the server's default_url.
- password (--password-file): the same, through the hub's login form.
- token (--token-walk): starts at /user/NAME/ with a token that can only open USER's
  server; sees none of the hub's pages, cookies or the OAuth hops, and says so.
"""

from __future__ import annotations

import asyncio
import time
from html.parser import HTMLParser
from urllib.parse import quote, urlsplit

import httpx

from .. import hubapi
from ..config import Config
from ..secrets import SecretFiles, read
from . import session, settings
from .cookies import CookieJar
from .evidence import gather_facts, watch_server_env
from .model import Facts, ProbeUsageError, Verdict, Walk
from .rules import classify_spawn_failure, config_diagnoses, diagnose
from .spawn import HubAPI, ProbeToken, api_message, to_the_end
from .urls import origin_of, path_of
from .walker import Walker

MAX_CONTINUATIONS = 4  # home -> spawn -> spawn-pending -> server: bounded


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.xsrf: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("name") == "_xsrf":
            self.xsrf = a.get("value")


def make_facts(cfg: Config, user: str) -> Facts:
    return Facts(user=user, public_origin=origin_of(cfg.public.connect_origin),
                 public_base=cfg.public.path, hub_origin=origin_of(cfg.hub_bind.connect_origin),
                 public_url=cfg.proxy.public_url)


class Probe:
    """One run of probe-spawn: the hub client, the facts, the walk, the clean-up."""

    def __init__(self, cfg: Config, user: str, client: httpx.AsyncClient, hub: HubAPI,
                 hub_token: str, deadline: float, timeout_s: float):
        self.cfg, self.user, self.client, self.hub = cfg, user, client, hub
        self.hub_token, self.deadline, self.timeout_s = hub_token, deadline, timeout_s
        self.facts = make_facts(cfg, user)
        self.timings: dict[str, float] = {}
        self.spawn_message: str | None = None
        self.failed: Verdict | None = None  # a spawn that failed while walking

    # ---- the server -------------------------------------------------------------------
    async def server_model(self) -> dict[str, object] | None:
        r = await self.hub.call("GET", f"users/{quote(self.user, safe='')}")
        return (r.json().get("servers") or {}).get("")

    async def start_via_api(self) -> str | None:
        try:
            r = await self.hub.call("POST", f"users/{quote(self.user, safe='')}/server",
                                    json={}, limit_s=max(1.0, min(
                                        30.0, self.deadline - time.monotonic())))
            if r.status_code not in (201, 202, 400):
                return f"the hub answered {r.status_code}: {api_message(r)}"
        except httpx.TimeoutException:
            pass  # still starting: the progress stream tells the rest
        return None

    async def await_spawn(self, post_msg: str | None = None) -> Verdict | None:
        """Follow the progress API until ready (None) or a failure verdict."""
        ts = time.monotonic()
        watcher = asyncio.create_task(
            watch_server_env(self.hub, self.client, self.user, self.deadline))
        try:
            state, msg = await self.hub.progress(self.user, self.deadline)
        finally:
            watcher.cancel()
            env_ev = await asyncio.gather(watcher, return_exceptions=True)
        hub_ev = env_ev[0] if isinstance(env_ev[0], list) else []
        self.timings["spawn_wait"] = (time.monotonic() - ts) * 1000
        self.spawn_message = msg or self.spawn_message
        user = self.user
        if state in ("failed", "stopped"):
            m = msg or post_msg or "the server stopped while starting"
            cause, fix = classify_spawn_failure(m)
            evidence = [f"the hub's progress API: {m}"]
            if hub_ev:
                cause = "hub_unreachable"
                fix = ("make the hub's API reachable from the server: set "
                       "c.JupyterHub.hub_connect_url (or Spawner.hub_connect_url) to an "
                       "address the server can connect to")
                evidence += hub_ev
            return Verdict(user, "spawn_failed", cause, m, evidence=evidence, fix=fix,
                           spawn_message=m)
        if state == "timeout":
            from .. import slurm

            try:
                sj = await slurm.user_job(self.client, self.cfg, self.hub_token, user)
            except httpx.HTTPError:
                sj = None
            pend = slurm.pending_verdict(sj)
            if sj is not None and pend is not None:
                return Verdict(user, "pending", "scheduler_pending", pend[0], fix=pend[1],
                               evidence=[f"squeue: job {sj.job_id} {sj.slurm_state} "
                                         f"({sj.reason})",
                                         f"the hub's progress API: {msg or 'none'}"],
                               spawn_message=msg)
            return Verdict(user, "spawn_timeout", "spawn_timeout",
                           f"the server was not ready within {self.timeout_s:.0f} s (last "
                           f"progress message: {msg or 'none'})",
                           fix="raise --timeout or c.Spawner.start_timeout; check the hub's log",
                           spawn_message=msg)
        return None

    async def note_server(self) -> None:
        server = await self.server_model() or {}
        self.facts.server_ready = bool(server.get("ready"))
        pid = (server.get("state") or {}).get("pid")  # type: ignore[union-attr]
        self.facts.server_pid = pid if isinstance(pid, int) else None
        self.facts.server_path = str(server.get("url") or
                                     f"{self.cfg.public.path}user/{quote(self.user)}/")

    # ---- walks ------------------------------------------------------------------------
    def _pub(self, rel: str) -> str:
        return self.facts.public_origin + self.facts.public_base + rel

    async def login_page(self, walker: Walker, w: Walk) -> httpx.Response | None:
        """The public URL's login page as a browser without a session sees it. Stops where
        the authenticator sends the browser to another origin (an identity provider)."""
        url = self._pub("hub/login")
        for _ in range(10):
            hop, r = await walker.request("GET", url, step="login")
            w.hops.append(hop)
            if r is None:
                return None
            if hop.location is None:
                return r
            if origin_of(hop.location) != self.facts.public_origin:
                w.not_walked.append(
                    f"the login at {origin_of(hop.location)} (the authenticator sends "
                    f"browsers to {hop.location.split('?')[0]}; hubsvc made the hub session "
                    "itself, so the identity provider's pages and its callback to the hub "
                    "were not walked)")
                return None
            url = hop.location
        return None

    async def session_walk(self, w: Walk, walker: Walker, password: str | None) -> None:
        """login page -> session -> landing, then onwards as the pages lead a browser."""
        r = await self.login_page(walker, w)
        if password is not None:
            if r is None or r.status_code != 200:
                w.ended = "error"
                return
            p = _FormParser()
            p.feed(r.text)
            data = {"username": self.user, "password": password}
            if p.xsrf:
                data["_xsrf"] = p.xsrf
            r = await walker.follow(self._pub("hub/login"), w, method="POST", data=data,
                                    step="login")
        else:
            self.add_session(walker, w)
            r = await walker.follow(self._pub("hub/login"), w, step="landing")
        for _ in range(MAX_CONTINUATIONS):
            if w.final is not None and w.final.step in ("spawn", "spawn-pending") and (
                    r is None or (w.final.status or 0) >= 400):
                # the hub's spawn pages failed or did not answer in time: the progress
                # API says why, as the spawn-pending page would show it
                self.failed = await self.await_spawn()
                return
            if r is None or w.final is None or (w.final.status or 0) >= 400:
                return
            step = w.final.step
            if step == "spawn-pending":
                verdict = await self.await_spawn()
                if verdict is not None:
                    self.failed = verdict
                    return
                walker.world_changed()
                r = await walker.follow(w.final.url, w, step="spawn-pending")
            elif step == "home":
                w.not_walked.append("the hub's home page: the walk went on as a click on its "
                                    "start button does (/hub/spawn)")
                r = await walker.follow(self._pub("hub/spawn"), w, step="spawn")
            elif step == "spawn":
                w.not_walked.append("the spawn options form (the server was started with "
                                    "the defaults through the hub's API)")
                msg = await self.start_via_api()
                verdict = await self.await_spawn(msg)
                if verdict is not None:
                    self.failed = verdict
                    return
                walker.world_changed()
                r = await walker.follow(self._pub(f"hub/spawn-pending/{quote(self.user)}"), w)
            else:
                return

    def add_session(self, walker: Walker, w: Walk) -> None:
        """Put USER's hub login cookie in the jar as the hub sets it at login, through the
        jar's own rules (so cookie_options a browser would refuse are refused here too)."""
        s = self.facts.settings
        host_prefix = bool(s and s.cookie_host_prefix)
        c = session.login_cookie(self.cfg, self.user, host_prefix=host_prefix)
        attrs = [f"Path={c.path}", "HttpOnly"] + (["Secure"] if c.secure else [])
        for k, v in ((s.cookie_options if s else {}) or {}).items():
            k = str(k).lower()
            if host_prefix and k in ("path", "domain", "secure"):
                continue  # the hub forces Path=/, Secure and no Domain on __Host- cookies
            if k == "path":
                attrs[0] = f"Path={v}"
            elif k == "domain" and v:
                attrs.append(f"Domain={v}")
            elif k == "secure" and v:
                attrs.append("Secure")
            elif k == "samesite" and v:
                attrs.append(f"SameSite={v}")
        header = f"{c.name}={c.value}; " + "; ".join(attrs)
        res = walker.jar.receive(self._pub("hub/login"), [header])[0]
        hop = w.hops[-1] if w.hops else None
        if hop is not None:
            if res.stored and res.cookie is not None:
                hop.cookies_set.append(res.cookie.describe() + " [made by hubsvc]")
            elif res.rejected_because:
                hop.cookies_rejected.append(f"{res.name}: {res.rejected_because}")

    async def walk(self, mode: str, entry: str | None, password: str | None,
                   token: str | None) -> tuple[Walk, str]:
        """One walk in the given mode; (walk, what credentials went where)."""
        pub = self.facts.public_origin
        w = Walk(t_start=time.monotonic())
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                     verify=False) as browser:
            if mode == "token":
                target = entry or (pub + (self.facts.server_path or "/"))
                on_pub = origin_of(target) == pub
                walker = Walker(browser, self.facts, jar=CookieJar(pub),
                                token=token if on_pub else None, deadline=self.deadline)
                walker.t0 = w.t_start  # hop t_ms and the verdict share one clock
                w.not_walked += [
                    "the login page and the hub's landing after login (c.JupyterHub.default_url)",
                    "spawn and spawn-pending pages", "the OAuth authorize and callback hops "
                    "and the cookies they set (the token is accepted without them)"]
                creds = (f"a token that can only open {self.user}'s server, sent only to "
                         f"{pub}{self.facts.server_path}" if on_pub else
                         f"no credentials: {origin_of(target)} is not the public URL's origin "
                         f"{pub}")
                await walker.follow(target, w)
                return w, creds
            walker = Walker(browser, self.facts, jar=CookieJar(pub), deadline=self.deadline,
                            credentials="session")
            walker.t0 = w.t_start  # hop t_ms and the verdict share one clock
            creds = ("the hub login session of " + self.user + (
                ", logged in through the hub's form" if password is not None else
                " made by hubsvc from the hub's cookie secret and database")
                + f"; cookies sent only to {pub}")
            await self.session_walk(w, walker, password)
            if entry and w.ended == "ok" and self.failed is None:
                if origin_of(entry) == pub:
                    await walker.follow(entry, w)
                else:
                    other = Walker(browser, self.facts, jar=CookieJar(pub),
                                   deadline=self.deadline)
                    other.t0 = walker.t0
                    await other.follow(entry, w)
                    creds += (f"; {entry} was walked without credentials: "
                              f"{origin_of(entry)} is not the public URL's origin")
            return w, creds

    # ---- judging ------------------------------------------------------------------------
    def healthy(self, w: Walk, entry: str | None) -> bool:
        f = w.final
        if w.ended != "ok" or f is None or (f.status or 0) >= 400:
            return False
        if any(origin_of(h.url) == self.facts.hub_origin != self.facts.public_origin
               for h in w.hops):
            return False  # a browser there is off the proxy: private_address
        return entry is not None or f.step == "server"

    async def judge(self, mode: str, entry: str | None, password: str | None,
                    token: str | None, repair: bool) -> Verdict:
        w, creds = await self.walk(mode, entry, password, token)
        if self.failed is not None:
            self.failed.chain, self.failed.walk_mode = w.hops, mode
            self.failed.credentials = creds
            return self.failed
        await self.note_server()
        f = self.facts
        start = entry or (w.hops[0].url if w.hops else None)
        if w.ended in ("loop", "too_many_redirects") and start and origin_of(
                start) not in (f.public_origin, f.hub_origin):
            p = urlsplit(start)
            same = f.public_origin + p.path + (f"?{p.query}" if p.query else "")
            w2, _ = await self.walk("token" if mode == "token" else mode, same, password, token)
            end = w2.final.status if w2.final else None
            f.direct_walk = (f"the same path on the public URL ({same}) ends {w2.ended} with "
                             f"{end} after {len(w2.hops)} hops")
        timings: dict[str, float] = {}
        if w.t_first_repeat is not None:
            timings["walk_to_repeat"] = (w.t_first_repeat - w.t_start) * 1000
        if self.healthy(w, entry):
            await gather_facts(self.client, self.cfg, f)
            final = w.final
            assert final is not None
            v = Verdict(self.user, "healthy", "none",
                        f"{len(w.hops)} hops, ended {final.status} at {path_of(final.url)}",
                        chain=w.hops, timings_ms=timings, walk_mode=mode, credentials=creds,
                        not_walked=w.not_walked)
            self.add_warnings(v)
            return v
        await gather_facts(self.client, self.cfg, f)
        d = diagnose(w, f)
        if w.t_first_repeat is not None:
            now = time.monotonic()
            timings["verdict_after_repeat"] = (now - w.t_first_repeat) * 1000
            # on the hops' clock: compare with the t_ms of the hop that sent the repeat
            timings["verdict_at"] = (now - w.t_start) * 1000
        outcome = {"loop": "loop", "too_many_redirects": "too_many_redirects"}.get(
            w.ended, "loop" if d.cause == "private_address" else "broken")
        v = Verdict(self.user, outcome, d.cause, d.summary, evidence=d.evidence, fix=d.fix,
                    chain=w.hops, timings_ms=timings, walk_mode=mode, credentials=creds,
                    not_walked=w.not_walked)
        if d.repairable and repair:
            await self.repair(v, mode, entry, password, token)
        self.add_warnings(v)
        return v

    async def repair(self, v: Verdict, mode: str, entry: str | None, password: str | None,
                     token: str | None) -> None:
        ok, what = await hubapi.resync_routes(self.client, self.cfg, self.hub_token)
        v.repair = what
        if not ok:
            return
        w2, _ = await self.walk(mode, entry, password, token)
        v.first_chain, v.chain = v.chain, w2.hops
        if self.healthy(w2, entry) and w2.final is not None:
            v.outcome, v.repaired = "repaired", True
            v.repair = what + (f"; re-probe healthy ({len(w2.hops)} hops, ended "
                               f"{w2.final.status} at {path_of(w2.final.url)})")
        else:
            v.repair = what + "; the re-probe still fails"

    def add_warnings(self, v: Verdict) -> None:
        f = self.facts
        if (f.server_version and f.hub_version and f.server_version != f.hub_version
                and v.cause != "version_skew"):
            v.warnings.append(
                f"version skew: the server runs jupyterhub-singleuser {f.server_version}, the "
                f"hub {f.hub_version}; install jupyterhub=={f.hub_version} in the user "
                "environment (a loop would end after 2 redirects instead of 4)")
        seen = {v.cause}
        for d in config_diagnoses(f):
            if d.cause not in seen:
                v.warnings.append(f"{d.summary} ({'; '.join(d.evidence)}); fix: {d.fix}")


async def probe_spawn(
    cfg: Config,
    user: str,
    *,
    start: bool = True,
    timeout_s: float = 120.0,
    repair: bool = True,
    entry_url: str | None = None,
    password: str | None = None,
    hub_token: str | None = None,
    token_walk: bool = False,
) -> Verdict:
    """Walk USER's flow and return the verdict. Raises ProbeUsageError (exit 78).

    entry_url: walk this URL too (after the login, like a logged-in browser opening it);
    credentials go only to the public URL's origin, another origin is walked without any.
    password: log in through the hub's form instead of a session hubsvc makes.
    token_walk: the old shortcut: a token for USER's server only, no hub pages, no cookies.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    mode = "token" if token_walk else ("password" if password is not None else "session")
    if hub_token is None:
        try:
            hub_token = read(SecretFiles.in_dir(cfg.paths.state_dir).hub_api_token)
        except OSError as e:
            raise ProbeUsageError(
                f"cannot read hubsvc's hub API token ({e}); run as root or the service "
                "account, with the same --config as `hubsvc run`") from None
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
        hub = HubAPI(client, cfg, hub_token)
        p = Probe(cfg, user, client, hub, hub_token, deadline, timeout_s)
        p.facts.settings, why = await settings.load_async(cfg)
        try:
            r = await hub.call("GET", "", limit_s=5.0)
            p.facts.hub_version = r.json().get("version")
        except (httpx.HTTPError, ValueError) as e:
            return Verdict(user, "hub_unreachable", "hub_down",
                           f"the hub's API at {hub.base} does not answer ({type(e).__name__})",
                           fix="check `hubsvc status` and the hub's log", walk_mode=mode)
        r = await hub.call("GET", f"users/{quote(user, safe='')}")
        if r.status_code == 404:
            raise ProbeUsageError(f"the hub has no user {user!r}; they must log in once first")
        if r.status_code == 403:
            raise ProbeUsageError(
                "hubsvc's token may not read users (403); is the hub running with hubsvc's "
                "generated config?")
        server = (r.json().get("servers") or {}).get("")
        running = bool(server and (server.get("ready") or server.get("pending")))
        if not running and not start:
            return Verdict(user, "not_running", "none",
                           f"{user} has no running server (--no-start: not starting one)",
                           fix="start it, or run without --no-start", walk_mode=mode)
        if mode == "token" or (server or {}).get("pending"):
            # the token walk starts at the server; a pending spawn is awaited first
            if not running:
                ts = time.monotonic()
                post_msg = await p.start_via_api()
                p.timings["spawn_request"] = (time.monotonic() - ts) * 1000
            else:
                post_msg = None
            if not (server or {}).get("ready"):
                failed = await p.await_spawn(post_msg)
                if failed is not None:
                    failed.walk_mode = mode
                    failed.timings_ms = {**p.timings, **failed.timings_ms}
                    return failed
        await p.note_server()
        token: str | None = None
        lease = ProbeToken(hub, user, int(timeout_s) + 60) if mode == "token" else None
        try:
            if lease is not None:
                token = await lease.mint()
            verdict = await p.judge(mode, entry_url, password, token, repair)
        finally:
            if lease is not None:
                # also when a Ctrl-C or SIGTERM cancelled the probe, during the mint too
                await to_the_end(lease.revoke())
        if why:
            verdict.warnings.append(f"the JupyterHub config could not be read ({why}); "
                                    "config-visible causes were not checked")
    verdict.spawn_message = verdict.spawn_message or p.spawn_message
    verdict.timings_ms = {**p.timings, **verdict.timings_ms,
                          "total": (time.monotonic() - t0) * 1000}
    return verdict

