"""The admin page ``/admin``: its login, its headers, escaping of hostile names, and the page as
a real headless Chromium renders it (driven over the DevTools protocol on a pipe)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.conftest import MakeGateway, bell
from qrmi.gateway.app import create_app
from qrmi.gateway.auth import hash_token, new_token
from qrmi.gateway.client import start_job
from qrmi.gateway.store import UsageRecord
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the gateway's fixtures are root's")

HOSTILE_ACCOUNT = "<script>window.__pwned=1</script>"
HOSTILE_USER = '"><img src=x onerror="window.__pwned=2">'
DAY = 86400.0


@pytest.fixture
def admin_token() -> str:
    return new_token()


@pytest.fixture
def gateway(make_gateway: MakeGateway, admin_token: str) -> LocalGateway:
    return make_gateway(admin_hashes=frozenset({hash_token(admin_token)}))


def login(gateway: LocalGateway, token: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/admin/login",
        data={"token": token},
        headers=headers,
        follow_redirects=False,
    )


def past_usage(gateway: LocalGateway, account: str, days_ago: int, seconds: float) -> None:
    """A finished task of an earlier day, as the store holds it (the chart covers past days)."""
    store = gateway.service.store
    submitted = time.time() - days_ago * DAY
    task_id = f"past-{account}-{days_ago}-{seconds}"
    store.add_usage(
        UsageRecord(
            qpu="emu",
            task_id=task_id,
            slurm_job_id="90",
            uid=1000,
            user_name="alice",
            account=account,
            partition="qpu",
            qpu_type="local-emulator",
            payload_kind="QiskitPrimitive",
            program="sampler",
            shots=100,
            input_bytes=10,
            submitted=submitted,
            started=submitted,
        )
    )
    store.end_usage(
        "emu",
        task_id,
        state="Completed",
        ended=submitted + seconds,
        quantum_seconds=seconds,
        usage_source="vendor",
    )


def plant_hostile_job(gateway: LocalGateway) -> None:
    """A job whose names carry markup. The API refuses such names; the store is written
    directly, as a defence-in-depth check that the page escapes whatever the store holds."""
    store = gateway.service.store
    store.add_job("666", 1002, hash_token(new_token()), None, account=HOSTILE_ACCOUNT)
    store.add_job("667", 1003, hash_token(new_token()), None, user_name=HOSTILE_USER)
    past_usage(gateway, HOSTILE_ACCOUNT, 1, 40.0)


# ----- login, sessions, headers ------------------------------------------------------------------


def test_the_page_asks_for_a_login_and_refuses_a_wrong_token(
    gateway: LocalGateway, admin_token: str
) -> None:
    anonymous = httpx.get(f"{gateway.url}/admin", follow_redirects=False)
    wrong = login(gateway, "not-the-token")
    forged_bearer = httpx.get(f"{gateway.url}/admin", headers={"Authorization": "Bearer nope"})

    assert (anonymous.status_code, anonymous.headers["location"]) == (303, "/admin/login")
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    assert "That is not an admin token." in wrong.text
    assert forged_bearer.status_code == 401
    form = httpx.get(f"{gateway.url}/admin/login")
    assert 'type="password"' in form.text and 'method="post"' in form.text
    assert admin_token not in form.text


def test_a_login_sets_a_strict_http_only_session_cookie_until_logout(
    gateway: LocalGateway, admin_token: str
) -> None:
    answer = login(gateway, admin_token)

    assert (answer.status_code, answer.headers["location"]) == (303, "/admin")
    cookie = answer.headers["set-cookie"]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age", "samesite"} <= flags
    assert "samesite=strict" in cookie.lower() and "path=/admin" in cookie.lower()
    assert "secure" not in flags  # plain HTTP here: a Secure cookie would never come back
    assert admin_token not in cookie
    session = answer.cookies["qrmi_admin_session"]

    page = httpx.get(f"{gateway.url}/admin", cookies={"qrmi_admin_session": session})
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"

    out = httpx.post(f"{gateway.url}/admin/logout", cookies={"qrmi_admin_session": session})
    again = httpx.get(
        f"{gateway.url}/admin", cookies={"qrmi_admin_session": session}, follow_redirects=False
    )
    assert out.status_code == 303
    assert again.status_code == 303


def test_a_session_outlives_a_gateway_restart_until_it_expires(
    gateway: LocalGateway, admin_token: str
) -> None:
    session = login(gateway, admin_token).cookies["qrmi_admin_session"]
    gateway.restart()  # new objects over the same store, as a restarted (or another) worker

    def page() -> int:
        cookies = {"qrmi_admin_session": session}
        return httpx.get(
            f"{gateway.url}/admin", cookies=cookies, follow_redirects=False
        ).status_code

    assert page() == 200
    assert gateway.service is not None
    gateway.service.store.clock = lambda: time.time() + 9 * 3600  # past the 8 h lifetime
    assert page() == 303


def test_the_oldest_sessions_end_when_too_many_are_open(gateway: LocalGateway) -> None:
    from qrmi.gateway.admin_page import AdminSessions

    assert gateway.service is not None
    sessions = AdminSessions(gateway.service.store, limit=3)
    opened = [sessions.open() for _ in range(5)]

    assert [sessions.valid(s) for s in opened] == [False, False, True, True, True]
    sessions.close(opened[-1])
    assert not sessions.valid(opened[-1])


def test_the_session_cookie_is_secure_when_the_gateway_is_reached_over_https(
    gateway: LocalGateway, admin_token: str, munge: MungeDaemon
) -> None:
    assert gateway.service is not None
    app = create_app(
        gateway.service,
        munge_socket=munge.socket,
        admin_hashes=frozenset({hash_token(admin_token)}),
    )

    async def https_login() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as c:
            return await c.post("/admin/login", data={"token": admin_token})

    answer = asyncio.run(https_login())

    assert answer.status_code == 303
    assert "secure" in {p.strip().lower() for p in answer.headers["set-cookie"].split(";")}


def test_a_login_form_posted_from_another_site_is_refused(
    gateway: LocalGateway, admin_token: str
) -> None:
    answer = login(gateway, admin_token, origin="http://evil.example")

    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


def test_the_admin_token_works_as_a_bearer_token_for_scripts(
    gateway: LocalGateway, admin_token: str
) -> None:
    page = httpx.get(f"{gateway.url}/admin", headers={"Authorization": f"Bearer {admin_token}"})

    assert page.status_code == 200
    assert '<tr data-qpu="emu">' in page.text and '<tr data-qpu="emu2">' in page.text


def test_hostile_names_are_escaped_as_text(gateway: LocalGateway, admin_token: str) -> None:
    plant_hostile_job(gateway)

    page = httpx.get(f"{gateway.url}/admin", headers={"Authorization": f"Bearer {admin_token}"})

    assert page.status_code == 200
    assert "<script" not in page.text
    assert "<img" not in page.text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page.text
    assert "&quot;&gt;&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;" in page.text


def test_a_paused_qpu_shows_its_reason_on_the_page_and_in_the_metrics(
    gateway: LocalGateway, admin_token: str
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    auth = {"Authorization": f"Bearer {admin_token}"}
    paused = httpx.post(
        f"{gateway.url}/v1/admin/qpus/emu2/pause",
        json={"reason": "calibration <b>until 14:00</b>"},
        headers=auth,
    )

    page = httpx.get(f"{gateway.url}/admin", headers=auth, timeout=30)
    metrics = httpx.get(f"{gateway.url}/metrics", headers=auth, timeout=30)

    assert paused.status_code == 200
    row = page.text[page.text.index('<tr data-qpu="emu2">') :].split("</tr>")[0]
    assert '<span class="badge paused">paused</span>' in row
    assert "calibration &lt;b&gt;until 14:00&lt;/b&gt;" in row
    states = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if sample.name == "qrmi_gateway_qpu_status" and sample.labels["qpu"] == "emu2"
    }
    assert states == {"online": 0, "offline": 0, "paused": 1, "unknown": 0}


def test_the_days_shown_are_bounded(gateway: LocalGateway, admin_token: str) -> None:
    auth = {"Authorization": f"Bearer {admin_token}"}

    week = httpx.get(f"{gateway.url}/admin", headers=auth)
    month = httpx.get(f"{gateway.url}/admin?days=30", headers=auth)
    too_many = httpx.get(f"{gateway.url}/admin?days=100000", headers=auth)

    assert "last 7 days" in week.text and "last 30 days" in month.text
    assert too_many.status_code == 400


# ----- in a real browser -------------------------------------------------------------------------


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the
    browser, ``--remote-debugging-pipe``): no extra package, no port."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        options = [
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ]
        if os.geteuid() == 0:
            options.append("--no-sandbox")  # Chromium refuses to sandbox itself as root
        redirect = f'exec "$@" 3<&{to_browser} 4>&{from_browser} {to_browser}<&- {from_browser}>&-'
        self._log = (profile / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            ["bash", "-c", redirect, "bash", executable, *options, "about:blank"],
            pass_fds=(to_browser, from_browser),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._sent = 0
        self._events: list[dict[str, Any]] = []
        self.session = ""

    def call(self, method: str, params: dict[str, Any] | None = None, *, page: bool = True) -> Any:
        self._sent += 1
        message: dict[str, Any] = {"id": self._sent, "method": method, "params": params or {}}
        if page and self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._sent:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._events.append(answer)

    def open_page(self) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
        )
        self.session = attached["sessionId"]
        self.call("Page.enable")

    def until_loaded(self, action: str, params: dict[str, Any] | None = None) -> None:
        """Run a command that navigates, and wait until the new page has loaded."""
        self._events.clear()
        self.call(action, params)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._events.append(self._receive(deadline))

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return answer["result"].get("value")

    def screenshot(self) -> bytes:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": int(size["height"]) + 1, "deviceScaleFactor": 1,
             "mobile": False},
        )  # fmt: skip
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer within 60 s")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise EOFError("Chromium closed its DevTools pipe; see chromium.log")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def close(self) -> None:
        try:
            os.write(self._out, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=15)
        finally:
            os.close(self._out)
            os.close(self._in)
            self._log.close()


@pytest.fixture
def chromium(tmp_path: Path) -> Any:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("chromium is not installed (scripts/install-system-deps installs it)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    browser = Chromium(executable, profile)
    try:
        browser.open_page()
        yield browser
    finally:
        browser.close()


def run_jobs(gateway: LocalGateway, munge: MungeDaemon) -> tuple[str, str]:
    """Two users' jobs in two accounts on two QPUs; the first keeps a task running."""
    alice = {"user": "alice", "account": "physics", "partition": "qpu"}
    bob = {"user": "bob", "account": "chemistry", "partition": "qpu"}
    _, physics = start_job(
        gateway.url, "501", 1000, ["emu"], 3600, munge_socket=munge.socket, accounting=alice
    )
    _, chemistry = start_job(
        gateway.url, "502", 1001, ["emu2"], 3600, munge_socket=munge.socket, accounting=bob
    )
    emu = QuantumResource("emu", "local-emulator", environ=physics)
    emu2 = QuantumResource("emu2", "local-emulator", environ=chemistry)
    assert emu.task_wait(emu.task_start(bell(seconds=0.3)), 60) == TaskStatus.Completed
    assert emu2.task_wait(emu2.task_start(bell(seconds=0.2)), 60) == TaskStatus.Completed
    running = emu.task_start(bell(seconds=60))
    deadline = time.monotonic() + 60
    while emu.task_status(running) != TaskStatus.Running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for days_ago, seconds in ((5, 900.0), (3, 1500.0), (2, 600.0), (1, 1200.0)):
        past_usage(gateway, "physics", days_ago, seconds)
    for days_ago, seconds in ((4, 700.0), (2, 1300.0), (1, 500.0)):
        past_usage(gateway, "chemistry", days_ago, seconds)
    return "501", running


PAGE_FACTS = """({
    path: location.pathname,
    cookie: document.cookie,
    qpus: [...document.querySelectorAll('#qpus tr[data-qpu]')].map(r => r.innerText),
    job: document.querySelector('[data-job="501"]')?.innerText,
    legend: [...document.querySelectorAll('#usage g.legend text')].map(t => t.textContent),
    bars: document.querySelectorAll('#usage svg rect[data-account]').length,
    scripts: document.querySelectorAll('script').length,
    images: document.querySelectorAll('img').length,
    pwned: window.__pwned === undefined ? null : window.__pwned,
    hostile: document.querySelector('[data-job="666"]')?.innerText ?? null,
})"""


def test_the_page_renders_in_chromium_after_a_login(
    gateway: LocalGateway,
    admin_token: str,
    munge: MungeDaemon,
    chromium: Chromium,
    tmp_path: Path,
) -> None:
    job_id, running = run_jobs(gateway, munge)

    try:
        chromium.until_loaded("Page.navigate", {"url": f"{gateway.url}/admin"})
        at_login = chromium.evaluate("location.pathname")
        chromium.evaluate("document.getElementById('token').focus()")
        chromium.call("Input.insertText", {"text": admin_token})
        chromium.until_loaded("Runtime.evaluate", {"expression": "document.forms[0].submit()"})
        page = chromium.evaluate(PAGE_FACTS)
        png = chromium.screenshot()
        plant_hostile_job(gateway)
        chromium.until_loaded("Page.reload")
        hostile = chromium.evaluate(PAGE_FACTS)
    finally:
        assert gateway.service is not None
        gateway.service.finish_job(job_id)  # stops the task left running

    assert at_login == "/admin/login"
    assert page["path"] == "/admin"
    assert page["cookie"] == ""  # HttpOnly: the session is invisible to scripts
    emu_row, emu2_row = page["qpus"]
    assert emu_row.startswith("emu\tlocal-emulator\tonline") and "1 of 1 busy" in emu_row
    assert emu2_row.startswith("emu2\tlocal-emulator\tonline")
    assert "alice" in page["job"] and "physics" in page["job"] and running in page["job"]
    assert "Running" in page["job"] and "Completed" in page["job"]
    assert [entry.split()[0] for entry in page["legend"]] == ["physics", "chemistry"]
    assert page["bars"] == 9  # one per account and day with QPU time: 7 past, 2 today (live)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    (tmp_path / "admin-page.png").write_bytes(png)
    keep = os.environ.get("QRMI_ADMIN_SCREENSHOT")  # e.g. docs/admin-page.png, for the docs
    if keep:
        Path(keep).write_bytes(png)

    assert hostile["path"] == "/admin"
    assert HOSTILE_ACCOUNT in hostile["hostile"]  # shown as text...
    assert any(entry.startswith(HOSTILE_ACCOUNT[:20]) for entry in hostile["legend"])
    assert (hostile["scripts"], hostile["images"], hostile["pwned"]) == (0, 0, None)  # ...only
