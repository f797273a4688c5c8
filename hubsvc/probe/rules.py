"""Diagnosis rules: one small function per cause, each `(walk, facts) -> Diagnosis | None`.

The causes come from the places JupyterHub 6.1.1 and jupyterhub-singleuser issue
redirects or set cookies (docs/redirect-loops.md maps each to its code path) and from what
a proxy does to a request. Rules that can also be seen in the effective JupyterHub config
(`facts.settings`) are called with walk=None by `hubsvc doctor` (`config_diagnoses`), so
doctor and probe-spawn give the same words and the same fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from .model import BROWSER_REDIRECT_LIMIT, Diagnosis, Facts, Hop, Walk
from .urls import is_loopback_host, normalize_url, origin_of, path_of, redirects_param

Rule = Callable[[Walk | None, Facts], Diagnosis | None]

LOOPED = ("loop", "too_many_redirects")
RESYNC_FIX = ("re-sync the proxy's routes from the hub (POST /hub/api/proxy with a "
              "`proxy`-scoped token; `hubsvc probe-spawn` does it unless --no-repair)")


def cycle_of(w: Walk) -> list[Hop]:
    """The hops that form the cycle (from the repeated hop to the end)."""
    return [] if w.repeat_of is None else w.hops[w.repeat_of:]


def repeat_evidence(w: Walk | None) -> list[str]:
    if w is None or w.repeat_url is None or w.repeat_of is None:
        return []
    how = ("once the repeated path segments are folded: the path grows by the same segment "
           f"on every pass, so a browser would follow it until its limit of "
           f"{BROWSER_REDIRECT_LIMIT}" if w.growing else "once the redirects counter is ignored")
    return [f"hop {len(w.hops) - 1} redirects to {w.repeat_url}, the same place as hop "
            f"{w.repeat_of} ({w.hops[w.repeat_of].url}) {how}"]


def _skew(f: Facts) -> bool:
    return bool(f.server_version and f.hub_version and f.server_version != f.hub_version)


def _skew_line(f: Facts) -> str:
    return (f"the server answers with X-JupyterHub-Version {f.server_version}, the hub is "
            f"{f.hub_version}")


# --------------------------------------------------------------------------- entry point


def private_address(w: Walk | None, f: Facts) -> Diagnosis | None:
    if w is None or f.hub_origin == f.public_origin:
        return None
    hit = [i for i, h in enumerate(w.hops) if origin_of(h.url) == f.hub_origin]
    if not hit:
        return None
    i = hit[0]
    ev = repeat_evidence(w)
    if w.ended not in LOOPED:
        # walked without the session (credentials never leave the public origin); a
        # browser sends its cookies to every port of the host, and the hub's own
        # listener sends a logged-in user round /hub/user/NAME/ until its 500
        ev.append("walked without the login session (another origin than the public URL); "
                  "a logged-in browser sends its cookies to every port of this host and is "
                  "sent back to the same listener until the hub answers 'Redirect loop "
                  "detected'")
    return Diagnosis(
        "private_address",
        "the flow went to the hub's private address (hub.bind_url) instead of the public "
        "URL, so the proxy was bypassed and the hub keeps sending the user back to itself",
        [*ev, f"hop {i} ({w.hops[i].url}) is on {f.hub_origin}, the hub's "
         f"own listener; the public URL is {f.public_origin}{f.public_base}"],
        f"open {f.public_origin}{f.public_base}user/{quote(f.user)}/ (the proxy's public "
        f"URL); never link to or bookmark {f.hub_origin}",
    )


def _public_url_parts(f: Facts) -> tuple[str, str] | None:
    s = f.settings
    if s is None or not s.public_url:
        return None
    return origin_of(s.public_url), (urlsplit(s.public_url).path or "/")


def public_url_mismatch(w: Walk | None, f: Facts) -> Diagnosis | None:
    """c.JupyterHub.public_url names another origin or path than proxy.public_url: the hub
    builds redirects (catch-all, OAuth callback host) from it."""
    parts = _public_url_parts(f)
    ev: list[str] = []
    if w is not None:
        sent = [(i, h) for i, h in enumerate(w.hops)
                if h.location and h.served_by in ("hub", "server")
                and origin_of(h.url) == f.public_origin
                and origin_of(h.location) not in (f.public_origin, f.hub_origin)]
        if not sent:
            return None
        i, h = sent[0]
        ev = [*repeat_evidence(w), f"hop {i}: the {h.served_by} at {h.url} sent the browser "
              f"to {h.location}, another origin than the public URL {f.public_origin}"]
        if h.cookies_sent:
            ev.append(f"cookies held for {f.public_origin} ({', '.join(h.cookies_sent)}) are "
                      f"not sent to {origin_of(h.location)}: the login does not follow")
    elif parts is None:
        return None
    if parts is not None:
        o, p = parts
        same_path = p.rstrip("/") in ("", f.public_base.rstrip("/"))
        if o == f.public_origin and same_path:
            return None if w is None else _public_url_text(f, ev)
        ev.append(f"c.JupyterHub.public_url = {f.settings.public_url!r}"  # type: ignore[union-attr]
                  + (f" ({f.settings.source})" if f.settings and f.settings.source else "")
                  + f"; proxy.public_url = {f.public_url or f.public_origin + f.public_base}")
    return _public_url_text(f, ev)


def _public_url_text(f: Facts, ev: list[str]) -> Diagnosis:
    return Diagnosis(
        "public_url_mismatch",
        "the hub names another address than the one users open (c.JupyterHub.public_url "
        "differs from proxy.public_url), so its redirects leave the origin that holds the "
        "login cookies",
        ev,
        "remove c.JupyterHub.public_url from the JupyterHub config, or set it to exactly "
        f"{f.public_url or f.public_origin + f.public_base} (scheme, host, port and path as "
        "users type them); then restart hubsvc and the users' servers",
    )


def prefix_outside_base(w: Walk | None, f: Facts) -> Diagnosis | None:
    if w is None or f.public_base == "/":
        return None
    out = [i for i, h in enumerate(w.hops) if origin_of(h.url) == f.public_origin
           and not path_of(h.url).startswith(f.public_base)]
    if not out:
        return None
    i = out[0]
    return Diagnosis(
        "prefix_mismatch",
        f"a URL left the hub's base URL {f.public_base}: hub, proxy and server do not agree "
        "on the prefix",
        [*repeat_evidence(w), f"hop {i} requests {path_of(w.hops[i].url)}, outside "
         f"{f.public_base}" + (f" (sent there by hop {i - 1}, {w.hops[i - 1].served_by})"
                               if i else "")],
        f"make every link and the server's base_url start with {f.public_base} "
        "(proxy.public_url's path); if another proxy is in front, it must pass the prefix "
        "through unchanged",
    )


def front_proxy(w: Walk | None, f: Facts) -> Diagnosis | None:
    if w is None or w.ended not in LOOPED or not w.hops:
        return None
    foreign = [i for i, h in enumerate(w.hops)
               if origin_of(h.url) not in (f.public_origin, f.hub_origin)]
    if not foreign or (w.repeat_of is not None and w.repeat_of < foreign[0]):
        return None
    i = foreign[0]
    extra = [f"hop {i} ({w.hops[i].url}) is not on hubsvc's public URL "
             f"{f.public_origin}{f.public_base}: another proxy is in front"]
    if f.direct_walk:
        extra.append(f.direct_walk)
    return Diagnosis(
        "prefix_mismatch",
        "the loop happens only through the proxy in front of hubsvc: it changes the path "
        f"(prefix {f.public_base}) on the way in, so the hub never sees the URL it sent",
        [*repeat_evidence(w), *extra],
        f"make the front proxy pass {f.public_base} through unchanged (no prefix stripping), "
        "or set proxy.public_url to the URL users really open, path included",
    )


# --------------------------------------------------------------------------- hub pages


def _hub_self_paths(f: Facts) -> set[str]:
    hub = f.public_base + "hub"
    return {f.public_base, hub, hub + "/", hub + "/login", hub + "/login/"}


def hub_default_url_loop(w: Walk | None, f: Facts) -> Diagnosis | None:
    """The hub sends a logged-in user to c.JupyterHub.default_url from /hub/ and after
    login; a default_url that is the hub's root or login page (or the public root, which
    the hub redirects to /hub/) sends the browser round forever."""
    s = f.settings
    du = s.default_url if s else None
    config_loops = du is not None and path_of(du) in _hub_self_paths(f) and (
        "://" not in du or origin_of(du) == f.public_origin)
    ev: list[str] = []
    if w is not None:
        cyc = cycle_of(w)
        if not (w.ended in LOOPED and cyc and all(
                h.served_by == "hub" and not path_of(h.url).startswith(
                    f.public_base + "hub/user/") and h.step != "oauth-authorize"
                for h in cyc)):
            return None
        ev = [*repeat_evidence(w), "every hop of the cycle is a hub page: "
              + " -> ".join(path_of(h.url) for h in cyc)]
    elif not config_loops:
        return None
    if du is not None:
        ev.append(f"c.JupyterHub.default_url = {du!r}"
                  + (f" ({s.source})" if s and s.source else ""))
    return Diagnosis(
        "hub_default_url_loop",
        "the hub's default_url leads back to the hub itself: the hub sends a logged-in user "
        "from /hub/ (and after login) to default_url, which redirects to /hub/ again",
        ev,
        "remove c.JupyterHub.default_url from the JupyterHub config (the hub then sends users "
        f"to their server), or point it at a page that does not redirect, e.g. "
        f"{f.public_base}hub/home",
    )


# --------------------------------------------------------------------------- cookies


def _cookie_config_problem(f: Facts) -> str | None:
    s = f.settings
    if s is None or not s.cookie_options:
        return None
    o = s.cookie_options
    base = f.public_base
    host = (urlsplit(f.public_origin).hostname or "").lower()
    where = f"c.JupyterHub.tornado_settings['cookie_options'] = {o!r}" + (
        f" ({s.source})" if s.source else "")
    path = o.get("path")
    if isinstance(path, str) and path and not base.startswith(
            path if path.endswith("/") else path + "/"):
        return (f"{where}: Path={path} does not cover both {base}hub/ (the hub's login "
                f"cookie) and {base}user/ (each server's login cookie)")
    dom = o.get("domain")
    if isinstance(dom, str) and dom:
        d = dom.lstrip(".").lower()
        if host != d and not host.endswith("." + d):
            return (f"{where}: Domain={dom} does not cover {host}, the public URL's host, "
                    "so browsers refuse the cookies")
    if o.get("secure") and urlsplit(f.public_origin).scheme != "https" \
            and not is_loopback_host(host):
        return (f"{where}: Secure cookies, but the public URL is plain http "
                f"({f.public_origin}), so browsers refuse them")
    return None


def _host_prefix_problem(f: Facts) -> str | None:
    """c.JupyterHub.cookie_host_prefix_enabled over http: JupyterHub 6.1.1's servers set
    their `__Host-` OAuth state cookie Secure only when the public URL is https
    (HubOAuth.set_state_cookie), and browsers refuse a `__Host-` cookie without Secure,
    on a loopback address too (measured with Chromium: the callback answers 403)."""
    s = f.settings
    if s is None or not s.cookie_host_prefix or urlsplit(f.public_origin).scheme == "https":
        return None
    return ("c.JupyterHub.cookie_host_prefix_enabled = True" + (
        f" ({s.source})" if s.source else "") + f", but the public URL is plain http "
        f"({f.public_origin}): the servers' __Host- OAuth state cookie is set without "
        "Secure, and browsers refuse it")


HOST_PREFIX_FIX = ("c.JupyterHub.cookie_host_prefix_enabled needs the public URL to be "
                   "https: serve hubsvc over https, or remove cookie_host_prefix_enabled from "
                   "the JupyterHub config; then restart hubsvc and the users' servers")


def ends_at_login(w: Walk, f: Facts) -> bool:
    """The walk ended on the hub's login form (a session the hub did not accept)."""
    last = w.final
    return bool(last and last.status == 200 and not last.location
                and path_of(last.url).startswith(f.public_base + "hub/login"))


def _needed_here(name: str, path: str, f: Facts) -> bool:
    """The hub's login cookie matters on the hub's pages, a server's on the server's."""
    name = name.removeprefix("__Host-")
    if name.startswith("jupyterhub-hub-login"):
        return path.startswith(f.public_base + "hub/")
    if name.startswith("jupyterhub-user-"):
        return path.startswith(f.user_prefix)
    return False


def cookie_scope(w: Walk | None, f: Facts) -> Diagnosis | None:
    """A login cookie (the hub's, or a server's after the OAuth callback) that the browser
    refuses to store or does not send back where it is needed."""
    prefix_conf = _host_prefix_problem(f)
    conf = _cookie_config_problem(f) or prefix_conf
    host_prefix = conf is not None and conf == prefix_conf
    ev: list[str] = []
    if w is not None:
        if w.ended == "ok" and w.final is not None and (w.final.status or 0) < 400 \
                and not ends_at_login(w, f):
            return None
        for i, h in enumerate(w.hops):
            for rej in h.cookies_rejected:
                ev.append(f"hop {i} ({path_of(h.url)}): the browser refuses cookie {rej}")
                host_prefix = host_prefix or (rej.startswith("__Host-") and conf is None)
            for ns in h.cookies_not_sent:
                if _needed_here(ns.split(" ")[0], path_of(h.url), f):
                    ev.append(f"hop {i} ({path_of(h.url)}): not sent: {ns}")
        if not ev:
            return None
        ev = [*repeat_evidence(w), *ev[:6]]
    elif conf is None:
        return None
    if conf:
        ev.append(conf)
    return Diagnosis(
        "cookie_scope",
        "a login cookie is refused by the browser or not sent back where it is needed, so "
        "the hub or the user's server never sees the login and starts it again",
        ev,
        HOST_PREFIX_FIX if host_prefix else
        "remove path, domain and secure from c.JupyterHub.tornado_settings['cookie_options'] "
        "(JupyterHub scopes each cookie itself); set secure only when users reach the hub "
        "over https; then restart hubsvc and the users' servers",
    )


# --------------------------------------------------------------------------- routes and servers


def _fell_to_hub(w: Walk, f: Facts) -> list[int]:
    hub_user = f.public_base + "hub/user/"
    return [i for i, h in enumerate(w.hops)
            if path_of(h.url).startswith(f.user_prefix) and h.location
            and path_of(h.location).startswith(hub_user)]


def _fell_evidence(w: Walk, f: Facts, i: int) -> list[str]:
    ev = [*repeat_evidence(w), f"hop {i}: {path_of(w.hops[i].url)} was answered by the hub "
          f"(redirect to {path_of(w.hops[i].location or '')}), not by {f.user}'s server"]
    if any(h.location and redirects_param(h.location) for h in w.hops):
        ev.append("the hub started counting redirects (?redirects=N): it believes the server "
                  "is ready and keeps sending the browser back to it")
    return ev


def missing_route(w: Walk | None, f: Facts) -> Diagnosis | None:
    if w is None or not f.server_ready or f.routes is None or f.route is not None:
        return None
    fell = _fell_to_hub(w, f)
    if not fell:
        return None
    ev = _fell_evidence(w, f, fell[0])
    ev.append(f"CHP's route table has no route for {f.server_path} (routes: "
              f"{', '.join(sorted(r.spec for r in f.routes)) or 'none'}) while the hub "
              "reports the server ready")
    if _skew(f):
        ev.append(_skew_line(f) + " (the hub gives up after 2 redirects instead of 4)")
    return Diagnosis(
        "missing_route",
        f"the proxy has no route for {f.user}'s running server, so its URL falls through to "
        "the hub, which redirects back: a loop",
        ev, RESYNC_FIX + ". Routes vanish when CHP restarts or someone deletes them",
        repairable=True,
    )


def wrong_target(w: Walk | None, f: Facts) -> Diagnosis | None:
    if w is None or f.route is None:
        return None
    tgt = f.route.target
    fell = _fell_to_hub(w, f) if f.server_ready else []
    if fell:
        if tgt and f.hub_target and tgt.rstrip("/") == f.hub_target.rstrip("/"):
            why = f"points at the hub ({tgt}), not at the server"
        elif f.target_answers is False:
            why = f"points at {tgt}, where no Jupyter server answers"
        elif tgt and f.server_url and origin_of(tgt) != origin_of(f.server_url):
            why = f"points at {tgt}, but the server listens at {origin_of(f.server_url)}"
        else:
            return None
        return Diagnosis(
            "wrong_target",
            f"the proxy's route for {f.user} has the wrong target, so requests never reach "
            "the server",
            [*_fell_evidence(w, f, fell[0]), f"CHP's route {f.server_path} {why}"],
            RESYNC_FIX, repairable=True)
    final = w.final
    if (final is not None and (final.status or 0) >= 400 and f.target_answers is False
            and path_of(final.url).startswith(f.user_prefix)):
        where = f"; the server listens at {origin_of(f.server_url)}" if f.server_url else ""
        if final.status in (502, 503, 504):
            summary = (f"the proxy's route for {f.user} points where no server answers, so "
                       f"the proxy answers {final.status}")
        else:
            # something answers there, but not as USER's server: another user's server, or
            # another program that took the port
            summary = (f"the proxy's route for {f.user} leads to something that is not "
                       f"{f.user}'s server (it answers {final.status})")
        return Diagnosis(
            "wrong_target", summary,
            [*repeat_evidence(w), f"CHP's route {f.server_path} points at {tgt}, where no "
             f"Jupyter server answers for {f.server_path}{where}", f"final hop: {final.line()}"],
            RESYNC_FIX + "; if it comes back, the server died: restart it",
            repairable=True)
    return None


def _server_self_default(f: Facts) -> str | None:
    s = f.settings
    if s is None or s.spawner_default_url is None:
        return None
    du = s.spawner_default_url
    # '/' is served as the server's own root page (measured: 200, no redirect); only the
    # server's full prefix written as its default_url names itself
    if path_of(du).rstrip("/") == f.user_prefix.rstrip("/"):
        return f"c.Spawner.default_url = {du!r}" + (f" ({s.source})" if s.source else "")
    return None


def self_redirect(w: Walk | None, f: Facts) -> Diagnosis | None:
    conf = _server_self_default(f)
    ev: list[str] = []
    if w is not None:
        for i, h in enumerate(w.hops):
            if h.location and h.served_by == "server" and \
                    normalize_url(h.location) == normalize_url(h.url):
                ev = [*repeat_evidence(w), f"hop {i}: {h.url} answered {h.status} with "
                      f"Location {h.location}"]
                break
        else:
            cyc = cycle_of(w)
            if not (cyc and all(h.served_by == "server" for h in cyc)):
                return None
            ev = [*repeat_evidence(w), "every hop of the cycle was answered by the server: "
                  + " -> ".join(path_of(h.url) for h in cyc)]
    elif conf is None:
        return None
    if conf:
        ev.append(conf)
    return Diagnosis(
        "self_redirect",
        f"{f.user}'s server redirects to its own start page: its default_url names the "
        "server's root",
        ev,
        "set c.Spawner.default_url to a page below the server's URL (e.g. '/lab'), not '/' "
        "or the server's URL itself, and check redirects configured in the single-user "
        "environment; then restart the user's server",
    )


def oauth_cycle(w: Walk | None, f: Facts) -> Diagnosis | None:
    cyc = cycle_of(w) if w is not None else []
    if not (cyc and any(h.step == "oauth-authorize" for h in cyc)
            and any(h.step == "oauth-callback" for h in cyc)):
        return None
    return Diagnosis(
        "oauth_cycle",
        "the login handshake between the server and the hub repeats: the server does not "
        "keep the cookie the hub gives it",
        [*repeat_evidence(w), "cycle: " + " -> ".join(path_of(h.url) for h in cyc)],
        "check that the browser reaches hub and server on one origin (the public URL), that "
        "no proxy in front strips Set-Cookie or rewrites the path, and that the server can "
        "reach the hub's API (hub_connect_url)",
    )


def hub_unreachable(w: Walk | None, f: Facts) -> Diagnosis | None:
    final = w.final if w is not None else None
    if final is None or (final.status or 0) < 400:
        return None
    fix = ("make the hub's API reachable from where the server runs: set "
           "c.JupyterHub.hub_connect_url (or Spawner.hub_connect_url) to an address the server "
           "can connect to, then restart the server")
    if f.server_hub_api_ok is False:
        return Diagnosis(
            "hub_unreachable",
            f"{f.user}'s server cannot reach the hub's API, so it cannot check any login",
            [*repeat_evidence(w), f"the server was given JUPYTERHUB_API_URL={f.server_hub_api}, "
             "which does not answer from this machine", f"final hop: {final.line()}"], fix)
    if final.served_by == "server" and (final.status or 0) >= 500:
        return Diagnosis(
            "hub_unreachable",
            f"{f.user}'s server answers {final.status}: it most likely cannot reach the hub's "
            "API to check the login",
            [*repeat_evidence(w), f"final hop: {final.line()}"], fix)
    return None


def server_page_missing(w: Walk | None, f: Facts) -> Diagnosis | None:
    """The user's own server answers 404 where the flow ends: most often the server's
    default_url names a page the user environment does not provide (/tree without the
    notebook package)."""
    final = w.final if w is not None else None
    if w is None or final is None or final.status != 404 or final.served_by != "server" \
            or not path_of(final.url).startswith(f.user_prefix):
        return None
    ev = [f"final hop: {final.line()}"]
    sent = [h for h in w.hops[:-1] if h.location and h.served_by == "server"
            and normalize_url(h.location) == normalize_url(final.url)]
    if sent:
        ev.append(f"{f.user}'s server itself sent the browser there from "
                  f"{path_of(sent[-1].url)} (its default_url)")
    s = f.settings
    if s is not None and s.spawner_default_url:
        ev.append(f"c.Spawner.default_url = {s.spawner_default_url!r}"
                  + (f" ({s.source})" if s.source else ""))
    return Diagnosis(
        "server_page_missing",
        f"{f.user}'s server answers 404 Not Found for {path_of(final.url)}: it has no such "
        "page",
        ev,
        "set c.Spawner.default_url to a page the user environment provides ('/lab' for "
        "JupyterLab; '/tree' needs the notebook package), or install what provides it; "
        "then restart the user's server",
    )


def _max_age_problem(f: Facts) -> str | None:
    """A cookie_max_age_days so short that the hub refuses its own login cookie at the next
    request (tornado compares the cookie's whole-second timestamp with now - max age)."""
    s = f.settings
    days = s.cookie_max_age_days if s else None
    if days is None or days * 86400 >= 60:
        return None
    return (f"c.JupyterHub.cookie_max_age_days = {days!r}"
            + (f" ({s.source})" if s and s.source else "")
            + f": the hub refuses a login cookie older than {max(days, 0) * 86400:.0f} s, so "
            "every login is forgotten by the next page")


def session_refused(w: Walk | None, f: Facts) -> Diagnosis | None:
    """A walk that holds a login session and still ends on the login form (also seen in
    the config alone: a cookie_max_age_days the hub's own cookies do not survive)."""
    conf = _max_age_problem(f)
    ev: list[str] = []
    if w is not None:
        if not ends_at_login(w, f):
            return None
        if not any(n.removeprefix("__Host-") == "jupyterhub-hub-login"
                   for h in w.hops for n in h.cookies_sent):
            return None
        ev = [f"final hop: {w.final.line()}"]  # type: ignore[union-attr]
    elif conf is None:
        return None
    if conf:
        ev.append(conf)
        fix = ("remove c.JupyterHub.cookie_max_age_days from the JupyterHub config (the "
               "default is 14 days) or set it to whole days; then restart hubsvc")
    else:
        fix = ("check the hub's log for 'Invalid or expired cookie token': the cookie secret "
               "or the database changed under the running hub; restart hubsvc")
    return Diagnosis(
        "session_refused",
        "the hub shows the login form to a browser that holds its login cookie: it refuses "
        "the cookie it set itself",
        ev, fix,
    )


def version_skew(w: Walk | None, f: Facts) -> Diagnosis | None:
    """The last resort: JupyterHub 6.1.1 only logs a version mismatch (_check_version) and
    gives up its /hub/user/ loop after 2 redirects instead of 4; a skew alone does not
    break a flow, so it is named only when nothing more specific explains the walk."""
    if w is None or not _skew(f):
        return None
    return Diagnosis(
        "version_skew",
        "nothing more specific explains this walk, and jupyterhub-singleuser in the server's "
        "environment is another version than the hub (JupyterHub only warns about it, and "
        "gives up a redirect loop after 2 redirects instead of 4)",
        [*repeat_evidence(w), _skew_line(f)],
        f"install jupyterhub=={f.hub_version} in the user environment (the one that provides "
        "jupyterhub-singleuser), then restart the user's server; if the problem stays, read "
        "the chain above",
    )


RULES: list[Rule] = [
    private_address, public_url_mismatch, prefix_outside_base, front_proxy,
    cookie_scope, hub_default_url_loop, missing_route, wrong_target,
    self_redirect, oauth_cycle, hub_unreachable, server_page_missing, session_refused,
    version_skew,
]
# The rules whose cause the effective JupyterHub config shows on its own (doctor).
CONFIG_RULES: list[Rule] = [public_url_mismatch, cookie_scope, hub_default_url_loop,
                            session_refused]


def diagnose(w: Walk, f: Facts) -> Diagnosis:
    """The first rule that recognises the walk; pure, no I/O."""
    for rule in RULES:
        d = rule(w, f)
        if d is not None:
            return d
    shape = " -> ".join(f"{h.status} {path_of(h.url)}" for h in w.hops[-8:])
    return Diagnosis(
        "unknown", "a redirect pattern hubsvc does not recognise",
        [*repeat_evidence(w), f"last hops: {shape}"],
        "read the chain above; report it with `hubsvc probe-spawn --json` output",
    )


def config_diagnoses(f: Facts) -> list[Diagnosis]:
    """Causes visible in the effective JupyterHub config alone (walk=None)."""
    return [d for rule in CONFIG_RULES if (d := rule(None, f)) is not None]


_SPAWN_RULES: list[tuple[re.Pattern[str], str, str]] = [
    # JupyterHub 6.1.1's progress API says "Spawn failed: {exception}"; the spawner not
    # finishing within c.Spawner.start_timeout is a TimeoutError without a message
    (re.compile(r"^\s*Spawn failed:\s*$"),
     "spawn_timeout",
     "the spawner did not finish starting within c.Spawner.start_timeout (the hub's log "
     "says 'failed to start in N seconds, giving up'): raise c.Spawner.start_timeout, or "
     "find out why the spawner is slow"),
    (re.compile(r"Failed to connect to my Hub|hub_connect_url|JUPYTERHUB_API_URL", re.I),
     "hub_unreachable",
     "make the hub's API reachable from the server: set c.JupyterHub.hub_connect_url "
     "(or Spawner.hub_connect_url) to an address the server can reach"),
    (re.compile(r"didn't respond in \d+", re.I),
     "server_unresponsive",
     "the server started but never answered on its URL. Most often it cannot reach the "
     "hub's API (check c.JupyterHub.hub_connect_url / Spawner.hub_connect_url and the "
     "hub's own log for 'Failed to connect to my Hub'); otherwise raise "
     "c.Spawner.http_timeout"),
    (re.compile(r"exited with exit code|exit status|No such file|not found", re.I),
     "server_crashed",
     "run the spawner's command by hand as the user to see its error; check that "
     "jupyterhub-singleuser and jupyterlab are installed in the user environment"),
    (re.compile(r"timeout|timed out", re.I),
     "spawn_timeout",
     "raise c.Spawner.start_timeout, or find out why the spawner is slow"),
]


def classify_spawn_failure(message: str) -> tuple[str, str]:
    """(cause, fix) for a spawn failure message from the hub's progress API."""
    for pat, cause, fix in _SPAWN_RULES:
        if pat.search(message):
            return cause, fix
    return "unknown", "read the hub's log around the spawn for the spawner's error"
