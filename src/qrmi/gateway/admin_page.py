"""The admin page (``GET /admin``): QPUs, running jobs and QPU time per account, as one
read-only HTML page with a server-drawn SVG chart.

Self-contained for air-gapped centres: no script, no external asset, no font download; its
Content-Security-Policy allows no script at all. Every value that came from outside the
gateway's code (job ids, user and account names, task ids, programs, vendor messages) goes
through :func:`el`, which escapes text and attributes, so a hostile name shows as text.

Browsers cannot send MUNGE credentials, so the page logs in with an admin token through a form
(:class:`AdminSessions`: a random session id in an HttpOnly, SameSite=Strict cookie, ``Secure``
over HTTPS; only its hash is kept, in memory). ``Authorization: Bearer <admin token>`` works
too, for scripts.
"""

from __future__ import annotations

import hashlib
import html
import math
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qrmi._version import __version__

if TYPE_CHECKING:
    from qrmi.gateway.metrics import QpuState, StatusBoard
    from qrmi.gateway.service import GatewayService
    from qrmi.gateway.store import JobRecord, Store, UsageRecord

__all__ = [
    "PAGE_HEADERS",
    "SESSION_COOKIE",
    "AdminSessions",
    "Html",
    "PageData",
    "el",
    "gather",
    "render_login",
    "render_page",
    "usage_chart",
]

#: The cookie holding an admin session id.
SESSION_COOKIE = "qrmi_admin_session"
#: How long an admin session lasts after its login.
SESSION_SECONDS = 8 * 3600
#: Sessions kept at most (the oldest are dropped first): bounds memory whatever logs in.
MAX_SESSIONS = 1000
#: Headers of every admin page: no script runs, nothing loads from elsewhere, no framing,
#: no caching of the page by browsers or proxies.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # not no-referrer: Origin must reach our form check
    "Cache-Control": "no-store",
}
#: The page reloads itself this often (a meta refresh: no script needed).
REFRESH_SECONDS = 30
#: Tasks listed per job (the open ones first, then the latest); the page says how many more.
TASKS_PER_JOB = 20
#: Jobs listed at most.
MAX_JOBS = 200
#: Accounts drawn one by one in the chart; the others are summed as "other accounts".
CHART_ACCOUNTS = 8
#: Okabe-Ito colours (distinguishable with colour blindness); grey is "other accounts".
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000")
OTHER_COLOUR = "#999"
NO_ACCOUNT = "(no account)"


# ----- safe markup -------------------------------------------------------------------------------


class Html(str):
    """Markup made by this module; any other ``str`` given to :func:`el` is escaped."""


def _text(value: object) -> str:
    if isinstance(value, Html):
        return value
    return html.escape(str(value), quote=True)


def el(tag: str, *children: object, **attrs: object) -> Html:
    """``<tag attrs>children</tag>``, every text child and attribute value escaped.

    Attribute names are Python identifiers with ``_`` for ``-`` (``aria_label``), a trailing
    ``_`` dropped (``class_``); ``None`` and ``False`` omit the attribute, ``True`` writes it bare.
    """
    parts = [tag]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        key = name.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{html.escape(str(value), quote=True)}"')
    inner = "".join(_text(child) for child in children if child is not None)
    return Html(f"<{' '.join(parts)}>{inner}</{tag}>")


def _void(tag: str, **attrs: object) -> Html:
    return Html(el(tag, **attrs)[: -len(f"</{tag}>")])


def _join(items: Iterable[object]) -> Html:
    return Html("".join(_text(item) for item in items))


# ----- sessions ----------------------------------------------------------------------------------


class AdminSessions:
    """Logged-in admin browsers: session ids (only their hashes kept, in ``store``) and when
    they end. In the store, every worker and replica knows them, and a restart keeps them."""

    def __init__(
        self, store: Store, *, lifetime: float = SESSION_SECONDS, limit: int = MAX_SESSIONS
    ):
        self.store = store
        self.lifetime = lifetime
        self.limit = limit

    def open(self) -> str:
        """A new session id (the cookie's value)."""
        session = secrets.token_urlsafe(32)
        expires = self.store.clock() + self.lifetime
        self.store.open_admin_session(_digest(session), expires, limit=self.limit)
        return session

    def valid(self, session: str | None) -> bool:
        """Whether ``session`` is a live session id."""
        if not session or len(session) > 128:
            return False
        return self.store.admin_session_live(_digest(session))

    def close(self, session: str | None) -> None:
        """End ``session`` (log out); unknown ids are ignored."""
        if session:
            self.store.close_admin_session(_digest(session))


def _digest(session: str) -> str:
    return hashlib.sha256(session.encode("utf-8", errors="replace")).hexdigest()


# ----- what the page shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """A job and the tasks listed for it (``more``: how many are not listed)."""

    job: JobRecord
    tasks: list[UsageRecord]
    more: int


@dataclass(frozen=True)
class PageData:
    """Everything the page shows, gathered at one time ``now``."""

    now: float
    qpus: list[QpuState]
    open_tasks: dict[str, tuple[int, int]]
    jobs: list[JobView]
    days: list[float]
    usage: dict[str, list[float]]


def gather(service: GatewayService, board: StatusBoard, *, days: int, now: float) -> PageData:
    """Read the page's data: QPU states (live), jobs not finished and their tasks, and the QPU
    seconds per account and UTC day over the last ``days`` days (by the tasks' submit time)."""
    store = service.store
    open_tasks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in store.usage(open_only=True):
        open_tasks[record.qpu][int(record.state == "Running")] += 1
    jobs = (store.jobs(state="active") + store.jobs(state="finishing"))[:MAX_JOBS]
    first_day = (math.floor(now / 86400) - days + 1) * 86400.0
    day_starts = [first_day + 86400.0 * i for i in range(days)]
    usage: dict[str, list[float]] = defaultdict(lambda: [0.0] * days)
    for record in store.usage(start=first_day):
        index = min(days - 1, int((record.submitted - first_day) // 86400))
        usage[record.account or NO_ACCOUNT][index] += record.quantum_seconds or 0.0
    return PageData(
        now=now,
        qpus=board.snapshot(),
        open_tasks={qpu: (q, r) for qpu, (q, r) in open_tasks.items()},
        jobs=[_job_view(service, job) for job in jobs],
        days=day_starts,
        usage=dict(usage),
    )


def _job_view(service: GatewayService, job: JobRecord) -> JobView:
    records = service.store.usage(slurm_job_id=job.job_id)
    unfinished = [r for r in records if r.ended is None]
    finished = sorted((r for r in records if r.ended is not None), key=lambda r: -(r.ended or 0))
    listed = (unfinished + finished)[:TASKS_PER_JOB]
    return JobView(job, listed, len(records) - len(listed))


# ----- rendering ---------------------------------------------------------------------------------

_STYLE = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#f5f6f8}
header{display:flex;align-items:center;gap:1em;padding:.6em 1.5em;background:#23344d;color:#fff}
header h1{font-size:1.25em;margin:0} header .when{flex:1;opacity:.8;font-size:.9em}
header button{background:none;border:1px solid #fff8;color:#fff;padding:.25em .8em;cursor:pointer}
main{padding:0 1.5em 2em} h2{font-size:1.1em;margin:1.4em 0 .5em}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;margin-bottom:.6em}
th,td{padding:.3em .7em;text-align:left;border-bottom:1px solid #e3e5e8;font-size:.9em}
th{background:#eef0f3;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 .5em;border-radius:.7em;font-size:.85em;color:#fff}
.online,.Completed{background:#2e7d32} .offline,.Failed{background:#c62828}
.paused,.Queued{background:#ef6c00} .unknown,.Cancelled{background:#757575}
.Running{background:#1565c0}
.why{color:#555;font-size:.85em} .empty{color:#555;font-style:italic}
.lanes{display:inline-block;width:6em;height:.7em;background:#e3e5e8;vertical-align:middle}
.lanes span{display:block;height:100%;background:#1565c0}
.job{margin-bottom:1em} .job h3{font-size:1em;margin:.8em 0 .3em}
form.login{background:#fff;padding:1.5em;max-width:26em;box-shadow:0 1px 2px #0002}
form.login input{width:100%;box-sizing:border-box;padding:.4em;margin:.5em 0 1em}
.error{color:#c62828}
"""


def _when(moment: float | None) -> str:
    if moment is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.2f} h"


def _document(title: str, *body: object, refresh: int | None = None) -> str:
    head = el(
        "head",
        _void("meta", charset="utf-8"),
        _void("meta", name="viewport", content="width=device-width, initial-scale=1"),
        _void("meta", http_equiv="refresh", content=refresh) if refresh else None,
        el("title", title),
        el("style", Html(_STYLE)),
    )
    return "<!DOCTYPE html>\n" + el("html", head, el("body", *body), lang="en")


def render_login(message: str | None = None) -> str:
    """The login form (the admin token is posted in the body, never in the URL)."""
    form = el(
        "form",
        el("h2", "Admin login"),
        el("p", message, class_="error") if message else None,
        el("label", "Admin token", for_="token"),
        _void(
            "input",
            id="token",
            name="token",
            type="password",
            autocomplete="current-password",
            required=True,
            autofocus=True,
        ),
        el("button", "Log in", type="submit"),
        el(
            "p",
            "An admin token is a line of the gateway's --admin-token-file (see docs/gateway.md).",
            class_="why",
        ),
        method="post",
        action="/admin/login",
        class_="login",
    )
    header = el("header", el("h1", "QRMI gateway"), el("span", f"version {__version__}"))
    return _document("QRMI gateway: login", header, el("main", form))


def render_page(data: PageData) -> str:
    """The admin page of ``data``."""
    logout = el(
        "form", el("button", "Log out", type="submit"), method="post", action="/admin/logout"
    )
    header = el(
        "header",
        el("h1", "QRMI gateway"),
        el("span", f"version {__version__} · {_when(data.now)}", class_="when"),
        logout,
    )
    main = el(
        "main",
        el("section", el("h2", "QPUs"), _qpu_table(data), id="qpus"),
        el("section", el("h2", "Running jobs"), _jobs(data), id="jobs"),
        el(
            "section",
            el("h2", f"QPU time per account, last {len(data.days)} days (UTC)"),
            usage_chart(data.days, data.usage),
            _usage_table(data.usage),
            id="usage",
        ),
    )
    return _document("QRMI gateway", header, main, refresh=REFRESH_SECONDS)


def _badge(word: str) -> Html:
    return el("span", word, class_=f"badge {word}")


def _lanes(state: QpuState) -> Html:
    capacity = state.status.capacity if state.status is not None else None
    if capacity is None or capacity.max_slots <= 0:
        return Html("—")
    busy = max(0, capacity.max_slots - capacity.available_slots)
    bar = el("span", el("span", style=f"width:{100 * busy // capacity.max_slots}%"), class_="lanes")
    return _join([bar, f" {busy} of {capacity.max_slots} busy"])


def _qpu_table(data: PageData) -> Html:
    head = el(
        "tr",
        *(
            el("th", name)
            for name in ("QPU", "type", "status", "lanes", "vendor queue", "queued", "running")
        ),
    )
    rows = []
    for state in data.qpus:
        reason = state.paused or state.error
        if reason is None and state.status is not None:
            reason = state.status.status_reason
        pending = state.status.pending_job_count if state.status is not None else None
        queued, running = data.open_tasks.get(state.name, (0, 0))
        rows.append(
            el(
                "tr",
                el("td", el("strong", state.name)),
                el("td", state.type),
                el("td", _badge(state.word), " ", el("span", reason, class_="why")),
                el("td", _lanes(state)),
                el("td", "—" if pending is None else pending, class_="num"),
                el("td", queued, class_="num"),
                el("td", running, class_="num"),
                data_qpu=state.name,
            )
        )
    return el("table", el("thead", head), el("tbody", *rows))


def _jobs(data: PageData) -> Html:
    if not data.jobs:
        return el("p", "No job is running.", class_="empty")
    return _join(_job(view, data.now) for view in data.jobs)


def _job(view: JobView, now: float) -> Html:
    job = view.job
    left = None if job.expires is None else max(0.0, job.expires - now)
    facts = (
        f"user {job.user_name or job.uid} · account {job.account or NO_ACCOUNT} · "
        f"partition {job.partition or '—'} · QPUs {', '.join(job.qpus) or '—'} · "
        f"started {_when(job.created)} · "
        + ("no time limit" if left is None else f"token valid {_seconds(left)} more")
    )
    title = el("h3", f"Job {job.job_id} ", _badge(job.state) if job.state != "active" else None)
    head = el(
        "tr",
        *(el("th", n) for n in ("task", "QPU", "state", "program", "submitted", "QPU time")),
    )
    rows = [
        el(
            "tr",
            el("td", el("code", r.task_id)),
            el("td", r.qpu),
            el("td", _badge(r.state)),
            el("td", r.program or r.payload_kind),
            el("td", _when(r.submitted)),
            el("td", _seconds(r.quantum_seconds), class_="num"),
        )
        for r in view.tasks
    ]
    if view.more:
        rows.append(el("tr", el("td", f"… and {view.more} more task(s)", colspan="6")))
    tasks = (
        el("table", el("thead", head), el("tbody", *rows))
        if rows
        else el("p", "No task yet.", class_="empty")
    )
    return el("div", title, el("p", facts, class_="why"), tasks, class_="job", data_job=job.job_id)


def _usage_table(usage: dict[str, list[float]]) -> Html:
    if not usage:
        return Html("")
    rows = [
        el("tr", el("td", account), el("td", _seconds(sum(values)), class_="num"))
        for account, values in sorted(usage.items(), key=lambda item: -sum(item[1]))
    ]
    head = el("tr", el("th", "account"), el("th", "QPU time"))
    return el("table", el("thead", head), el("tbody", *rows), class_="totals")


# ----- the chart ---------------------------------------------------------------------------------

_WIDTH, _HEIGHT = 880, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 660, 20, 250


def _nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(step * power for step in (1, 2, 5, 10) if step * power >= value))


def _unit(top_seconds: float) -> tuple[float, str]:
    if top_seconds >= 7200:
        return 3600.0, "hours"
    if top_seconds >= 120:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _series(usage: dict[str, list[float]]) -> list[tuple[str, str, list[float]]]:
    ranked = sorted(usage.items(), key=lambda item: (-sum(item[1]), item[0]))
    series = [
        (account, PALETTE[i % len(PALETTE)], values)
        for i, (account, values) in enumerate(ranked[:CHART_ACCOUNTS])
    ]
    rest = ranked[CHART_ACCOUNTS:]
    if rest:
        summed = [sum(values[i] for _, values in rest) for i in range(len(rest[0][1]))]
        series.append((f"other accounts ({len(rest)})", OTHER_COLOUR, summed))
    return series


def usage_chart(days: list[float], usage: dict[str, list[float]]) -> Html:
    """A stacked bar chart (SVG) of QPU time per account and day; ``days`` are the UTC
    midnights, ``usage`` each account's seconds per day."""
    series = _series(usage)
    totals = [sum(values[i] for _, _, values in series) for i in range(len(days))]
    scale, unit = _unit(max(totals, default=0.0))
    top = _nice_top(max(totals, default=0.0) / scale)
    label = f"QPU time per account and day over {len(days)} days"
    parts: list[Html] = [el("title", label)]
    parts += _axes(days, top, unit)
    slot = (_RIGHT - _LEFT) / max(1, len(days))
    for i, day in enumerate(days):
        base = float(_BOTTOM)
        for account, colour, values in series:
            height = values[i] / scale / top * (_BOTTOM - _TOP)
            if values[i] <= 0:
                continue
            base -= height
            tip = f"{account}, {time.strftime('%Y-%m-%d', time.gmtime(day))}: "
            parts.append(
                el(
                    "rect",
                    el("title", tip + _seconds(values[i])),
                    x=f"{_LEFT + slot * (i + 0.2):.1f}",
                    y=f"{base:.1f}",
                    width=f"{slot * 0.6:.1f}",
                    height=f"{max(height, 0.5):.1f}",
                    fill=colour,
                    data_account=account,
                )
            )
    parts += _legend(series)
    if not series:
        parts.append(
            el("text", "no QPU time recorded", x=(_LEFT + _RIGHT) // 2, y=_TOP + 100, fill="#555")
        )
    return el(
        "svg",
        *parts,
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {_WIDTH} {_HEIGHT}",
        width=_WIDTH,
        height=_HEIGHT,
        role="img",
        aria_label=label,
        font_family="DejaVu Sans, Helvetica, Arial, sans-serif",
        font_size="12",
        class_="chart",
    )


def _axes(days: list[float], top: float, unit: str) -> list[Html]:
    parts = [el("rect", x=0, y=0, width=_WIDTH, height=_HEIGHT, fill="#fff")]
    # Round tick values: a top of 2 x 10^k in 4 steps, of 1 or 5 x 10^k in 5.
    steps = 4 if f"{top:e}".startswith("2") else 5
    for step in range(steps + 1):
        value = top * step / steps
        y = _BOTTOM - (_BOTTOM - _TOP) * step / steps
        parts.append(el("line", x1=_LEFT, x2=_RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}", stroke="#ddd"))
        parts.append(
            el("text", f"{value:g}", x=_LEFT - 6, y=f"{y + 4:.1f}", text_anchor="end", fill="#333")
        )
    parts.append(
        el(
            "text",
            unit,
            x=16,
            y=(_TOP + _BOTTOM) // 2,
            transform=f"rotate(-90 16 {(_TOP + _BOTTOM) // 2})",
            text_anchor="middle",
            fill="#333",
        )
    )
    slot = (_RIGHT - _LEFT) / max(1, len(days))
    every = max(1, math.ceil(len(days) / 10))  # at most about ten date labels
    for i, day in enumerate(days):
        if i % every == 0 or i == len(days) - 1:
            parts.append(
                el(
                    "text",
                    time.strftime("%m-%d", time.gmtime(day)),
                    x=f"{_LEFT + slot * (i + 0.5):.1f}",
                    y=_BOTTOM + 18,
                    text_anchor="middle",
                    fill="#333",
                )
            )
    parts.append(el("line", x1=_LEFT, x2=_RIGHT, y1=_BOTTOM, y2=_BOTTOM, stroke="#333"))
    return parts


def _legend(series: list[tuple[str, str, list[float]]]) -> list[Html]:
    parts = []
    for i, (account, colour, values) in enumerate(series):
        y = _TOP + 6 + 22 * i
        name = account if len(account) <= 24 else account[:23] + "…"
        parts.append(
            el(
                "g",
                el("title", account),  # the whole name, as a tooltip
                el("rect", x=_RIGHT + 24, y=y, width=12, height=12, fill=colour),
                el("text", f"{name}  {_seconds(sum(values))}", x=_RIGHT + 42, y=y + 11),
                fill="#222",
                class_="legend",
            )
        )
    return parts
