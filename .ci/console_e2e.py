#!/usr/bin/env python3
"""The web console in a real browser: headless Chromium driven over the DevTools protocol.

Against a running `recoup up --demo`: signs in with the admin key, creates a case and drives it
to CLOSED through its buttons, acts from a second tab on the stale page and sees the conflict,
opens the collections page and sees a change of the do-not-contact list appear without a
reload, opens the PAR chart, uploads a CSV with bad rows and sees the report and the errors, then
signs in as a viewer (no buttons) and as another tenant's admin (the case is not
found).
Each page is saved as a screenshot under the given directory, checked with axe-core (from the
npm registry, pinned by its integrity hash: no serious or critical violation), and walked with
the Tab key (every link, button and field takes the focus).

usage: console_e2e.py BASE_URL SCREENSHOT_DIR ADMIN_KEY VIEWER_KEY OTHER_TENANT_KEY
"""
import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

import websocket

BASE, SHOTS, ADMIN, VIEWER, OTHER = sys.argv[1:6]
PORT = 9333
AXE_VERSION = "4.14.1"
AXE_INTEGRITY = ("sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtu"
                 "FooJpZe37OgudVGtQ==")
AXE = None


def axe_source():
    """axe.min.js of the pinned axe-core, from the npm registry (kept beside the screenshots)."""
    cached = os.path.join(SHOTS, f"axe-core-{AXE_VERSION}.tgz")
    if not os.path.exists(cached):
        url = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
        with urllib.request.urlopen(url, timeout=60) as r, open(cached, "wb") as f:
            f.write(r.read())
    data = open(cached, "rb").read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != AXE_INTEGRITY:
        os.remove(cached)
        raise SystemExit(f"console e2e: axe-core {AXE_VERSION} does not match its integrity hash")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.extractfile("package/axe.min.js").read().decode()


class DevTools:
    """A DevTools websocket: one command at a time, its answer (events in between skipped)."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.n:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})


class Tab(DevTools):
    """One page of the browser."""

    def __init__(self, target_id):
        super().__init__(websocket.create_connection(
            f"ws://127.0.0.1:{PORT}/devtools/page/{target_id}", timeout=30))
        self.call("Page.enable")
        self.call("Runtime.enable")

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def settle(self, url_before=None):
        """Waits for the page (a new one when url_before is given) to finish loading."""
        for _ in range(200):
            time.sleep(0.05)
            try:
                state = self.js("document.readyState + ' ' + location.href")
            except RuntimeError:
                continue  # the page was replaced while asking
            ready, url = state.split(" ", 1)
            if ready == "complete" and (url_before is None or url != url_before):
                return
        raise RuntimeError("the page did not load")

    def go(self, path):
        self.call("Page.navigate", url=BASE + path)
        self.settle()

    def submit(self, script):
        """Runs a script that submits a form, and waits for the answer's page."""
        before = self.js("location.href + '#' + performance.timeOrigin")
        self.js(script)
        for _ in range(200):
            time.sleep(0.05)
            try:
                now = self.js("location.href + '#' + performance.timeOrigin")
                if now != before and self.js("document.readyState") == "complete":
                    return
            except RuntimeError:
                continue
        raise RuntimeError("the form's answer did not load")

    def press(self, label):
        self.submit(
            "[...document.querySelectorAll('button')].find(b => b.textContent.trim() === "
            + json.dumps(label) + ").click()")

    def text(self):
        return self.js("document.body.innerText")

    def shot(self, name):
        """Saves the page, then checks its accessibility and its keyboard reach."""
        # A tab behind another may never paint: the screenshot would wait for it.
        self.call("Page.bringToFront")
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000),
                "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)["data"]
        with open(os.path.join(SHOTS, f"{name}.png"), "wb") as f:
            f.write(base64.b64decode(data))
        self.audit(name)
        self.keyboard(name)

    def audit(self, name):
        """axe-core on the page: no serious or critical violation."""
        if not self.js("typeof axe !== 'undefined'"):
            self.js(AXE)
        found = self.js("axe.run(document, {resultTypes: ['violations']}).then(r => "
                        "r.violations.filter(v => ['serious', 'critical'].includes(v.impact))"
                        ".map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + "
                        "v.nodes.map(n => n.target.join(' ')).join(', ')))")
        if found:
            raise SystemExit(f"console e2e: {name}: accessibility: " + "; ".join(found))

    def keyboard(self, name):
        """Every link, button and field of the page takes the focus from the Tab key."""
        count = self.js(
            "(() => { const all = [...document.querySelectorAll('a[href], button, select, "
            "textarea, input:not([type=hidden])')].filter(e => e.getClientRects().length);"
            "all.forEach((e, i) => e.dataset.reach = i); window.__reached = new Set();"
            "document.addEventListener('focusin', e => { if (e.target.dataset.reach) "
            "window.__reached.add(e.target.dataset.reach) }); document.activeElement.blur();"
            "return all.length })()")
        # A date field takes a stop per part: press on well past the count.
        for _ in range(3 * count + 5):
            for kind in ("keyDown", "keyUp"):
                self.call("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab",
                          windowsVirtualKeyCode=9)
        missed = self.js("[...document.querySelectorAll('[data-reach]')].filter(e => "
                         "!window.__reached.has(e.dataset.reach)).map(e => e.outerHTML"
                         ".slice(0, 80))")
        if missed:
            raise SystemExit(f"console e2e: {name}: not reachable by keyboard: {missed}")


def browser():
    profile = tempfile.mkdtemp()
    chrome = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", f"--remote-debugging-port={PORT}",
         "--window-size=1200,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            version = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json/version"))
            return chrome, websocket.create_connection(version["webSocketDebuggerUrl"], timeout=30)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("chromium did not start")


class Browser(DevTools):
    """Chromium's browser endpoint: contexts (separate cookie jars) and tabs in them."""

    def context(self):
        return self.call("Target.createBrowserContext")["browserContextId"]

    def tab(self, context):
        target = self.call("Target.createTarget", url="about:blank", browserContextId=context)
        return Tab(target["targetId"])


def check(condition, what, page):
    if not condition:
        raise SystemExit(f"console e2e: {what}\n--- page ---\n{page.text()}")


def sign_in(tab, key):
    if not key.startswith("rk1_"):
        raise SystemExit(f"console e2e: not an API key: {key!r}")
    tab.go("/sign-in")
    tab.submit("document.getElementById('credential').value = " + json.dumps(key)
               + "; document.querySelector('form.sign-in').requestSubmit()")
    check(tab.js("location.pathname") == "/cases", "signed in to the cases", tab)


def follow_do_not_contact(tab):
    """The collections page, and a change of the do-not-contact list appearing in it while it
    stays open (the demo's vendor changes rows every few seconds)."""
    tab.go("/collections")
    check("All deals" in tab.text() and "Promises to pay" in tab.text(), "the funnel", tab)
    buckets = tab.js("document.querySelectorAll('tr[data-bucket]').length")
    check(buckets == 6, "the DPD buckets, all six", tab)
    tab.shot("06-collections")
    tab.js("window.__same_page = true")
    following = "document.getElementById('dnc').dataset"
    for _ in range(300):
        if tab.js(following + ".following") == "1" and tab.js(following + ".sequence"):
            break
        time.sleep(0.1)
    check(tab.js(following + ".following") == "1", "the list follows its changes", tab)
    start = int(tab.js(following + ".sequence"))
    for _ in range(1200):
        if int(tab.js(following + ".sequence")) > start:
            break
        time.sleep(0.1)
    check(int(tab.js(following + ".sequence")) > start, "a change arrives within two minutes", tab)
    check(tab.js("window.__same_page === true"), "the page was not reloaded", tab)
    kind, borrower = tab.js(following + ".lastChange").split(" ", 1)
    shown = tab.js("[...document.querySelectorAll('#dnc li')].some(li => li.dataset.id === "
                   + json.dumps(borrower) + ")")
    check(shown == (kind == "ADDED"), f"{kind} {borrower} shows in the list", tab)
    tab.shot("07-do-not-contact-changed")
    print(f"console e2e: the do-not-contact list showed {kind} {borrower} without a reload")


def chart_portfolio(tab):
    """The PAR chart of the snapshots the smoke test imported (90 days of 2026)."""
    path = "/portfolio?from=2026-01-01&to=2026-03-31"
    for _ in range(100):
        tab.go(path)
        if "On 2026-03-31" in tab.text():
            break
        time.sleep(0.2)
    check("On 2026-03-31" in tab.text(), "the portfolio's last day", tab)
    check(tab.js("document.querySelectorAll('svg polygon.bucket').length") == 8,
          "an area per bucket", tab)
    points = tab.js("document.querySelector('svg polyline.par30').getAttribute('points')")
    check(len(points.split(" ")) == 90, "a PAR30 point per day", tab)
    tab.shot("10-portfolio")
    # One account of them, looked up from the portfolio page.
    tab.submit("[...document.querySelectorAll('a')].find(a => a.textContent === "
               "'Look up one account').click()")
    tab.submit("document.getElementById('uid').value = 'default_smoke_P0';"
               "document.querySelector('form.filter').requestSubmit()")
    check("Account P0" in tab.text(), "the account's page", tab)
    points = tab.js("document.querySelector('svg polyline.source').getAttribute('points')")
    check(len(points.split(" ")) == 90, "a point per day of the account", tab)
    tab.shot("10-account")


def upload_with_bad_rows(tab):
    """A CSV with two bad rows uploaded through the form, its progress shown, then its report,
    its errors and the errors CSV."""
    unique = int(time.time())
    path = os.path.join(tempfile.mkdtemp(), f"e2e-{unique}.csv")
    with open(path, "w") as f:
        f.write("snapshot_date,account_external_id,days_arrears_consecutive_source\n"
                f"2026-04-01,E2E-{unique}-1,0\n2026-13-01,E2E-{unique}-2,1\n"
                f"2026-04-01,E2E-{unique}-3,many\n")
    tab.go("/imports")
    check("Upload snapshots" in tab.text(), "the upload form", tab)
    tab.shot("11-imports")
    root = tab.call("DOM.getDocument")["root"]["nodeId"]
    node = tab.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    tab.call("DOM.setFileInputFiles", files=[path], nodeId=node)
    # What the progress bar showed, kept across the page change that follows the upload.
    tab.js("sessionStorage.removeItem('e2e-progress'); new MutationObserver(() => "
           "sessionStorage.setItem('e2e-progress', document.getElementById('upload-status')"
           ".textContent)).observe(document.getElementById('upload-status'), "
           "{childList: true, characterData: true, subtree: true})")
    tab.submit("document.querySelector('form[data-upload]').requestSubmit()")
    check(tab.js("location.pathname").startswith("/imports/"), "the report after the upload", tab)
    progress = tab.js("sessionStorage.getItem('e2e-progress')") or ""
    check("sent" in progress.lower(), f"the progress bar reported the upload ({progress!r})", tab)
    counts = tab.js("Object.fromEntries([...document.querySelectorAll('[data-count]')]"
                    ".map(td => [td.dataset.count, Number(td.textContent)]))")
    check(counts == {"read": 3, "accepted": 1, "unchanged": 0, "rejected": 2},
          f"the report's counts ({counts})", tab)
    rows = tab.js("[...document.querySelectorAll('#error-table tbody tr')]"
                  ".map(tr => tr.cells[0].textContent + ' ' + tr.cells[3].textContent)")
    check(rows == ["3 date_format", "4 integer"], f"the errors by row ({rows})", tab)
    tab.shot("12-import-report")
    lines = tab.js("fetch(document.querySelector('a[download]').href).then(r => r.text())"
                   ".then(t => t.trim().split('\\n'))")
    check(len(lines) == 3 and lines[0] == "row,column,value,rule,message",
          f"the errors CSV ({lines})", tab)
    print(f"console e2e: uploaded {os.path.basename(path)} ({progress}); report and errors shown")


def main():
    global AXE
    os.makedirs(SHOTS, exist_ok=True)
    AXE = axe_source()
    chrome, ws = browser()
    try:
        run(Browser(ws))
    finally:
        chrome.kill()


def run(chrome):
    team = chrome.context()
    first = chrome.tab(team)
    first.go("/cases")
    check(first.js("location.pathname") == "/sign-in", "no session leads to the sign-in", first)
    first.shot("01-sign-in")
    sign_in(first, ADMIN)
    reference = f"INV-E2E-{int(time.time())}"
    first.submit(
        "document.getElementById('reference').value = " + json.dumps(reference) + ";"
        "document.getElementById('amount_minor').value = '12500';"
        "document.getElementById('due_date').value = '2026-01-15';"
        "document.querySelector('form.stacked').requestSubmit()")
    case_path = first.js("location.pathname")
    check(case_path.startswith("/cases/") and "REVIEWING" in first.text(), "case created", first)
    first.shot("02-case-created")

    second = chrome.tab(team)  # the same browser: the same session, a second tab
    second.go(case_path)
    check("Mark reviewed" in second.text(), "the second tab shows the case", second)

    for button, state in [("Mark reviewed", "PREPARING"), ("Mark prepared", "PENDING"),
                          ("Start processing", "PROCESSING"), ("Close case", "CLOSED")]:
        first.press(button)
        check(state in first.text(), f"{button} leads to {state}", first)
    check("Close case" not in first.text(), "a closed case offers no command", first)
    first.shot("03-case-closed")

    second.press("Mark reviewed")
    check("changed since you loaded it" in second.text() and "CLOSED" in second.text(),
          "the stale tab gets the conflict and the case as it stands", second)
    second.shot("04-conflict")

    first.go("/cases?state=CLOSED")
    check(reference in first.text(), "the list of closed cases holds the case", first)
    first.shot("05-cases-closed")
    first.go("/cases?q=" + reference[:-3])
    check(reference in first.text(), "the case found by a prefix of its reference", first)

    follow_do_not_contact(first)
    chart_portfolio(first)
    upload_with_bad_rows(first)
    first.go("/health")
    check("Kafka answers." in first.text() and "Not serving" not in first.text(),
          "the health page: every service serving, Kafka answering", first)
    rows = first.js("document.querySelectorAll('#lag tr[data-read-model]').length")
    check(rows == 3, "the consumer lag of the three read models", first)
    first.shot("13-health")

    viewer = chrome.tab(chrome.context())
    sign_in(viewer, VIEWER)
    viewer.go(case_path)
    check(reference in viewer.text(), "the viewer sees the case", viewer)
    check(viewer.js("document.querySelectorAll('form[action*=\"/cases/\"]').length") == 0,
          "the viewer is offered no command", viewer)
    viewer.shot("08-viewer")
    viewer.go("/imports")
    check(viewer.js("document.querySelectorAll('form[data-upload]').length") == 0,
          "the viewer is offered no upload", viewer)

    stranger = chrome.tab(chrome.context())
    sign_in(stranger, OTHER)
    stranger.go(case_path)
    check("Not found" in stranger.text() and reference not in stranger.text(),
          "another tenant's admin does not see the case", stranger)
    stranger.shot("09-other-tenant")
    print(f"console e2e: signed in, {reference} driven to CLOSED through its buttons, the stale "
          f"tab's conflict, a viewer without buttons or upload, another tenant refused; every page without "
          f"a serious accessibility violation (axe-core {AXE_VERSION}) and reachable by keyboard; "
          f"screenshots in {SHOTS}")


if __name__ == "__main__":
    main()
