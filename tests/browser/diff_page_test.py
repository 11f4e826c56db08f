#!/usr/bin/env python3
"""The `liaison policy diff --html` page in a real headless browser (Debian's
chromium, driven over the DevTools protocol on a pipe, no network): it
renders, logs no console error or exception, makes no network request, and
shows the changes of a known diff. The same harness must catch a page that
does err and fetch (a control), or the test proves nothing.

Usage: diff_page_test.py LIAISON_BIN SOURCE_DIR
"""
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

DEADLINE_S = 60  # the whole browser session; every wait below is bounded by it


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def find_chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    fail("chromium is not installed; scripts/install-deps installs it (Debian package chromium)")


class Browser:
    """One headless chromium, spoken to over --remote-debugging-pipe."""

    def __init__(self, chromium, profile):
        self.to_r, self.to_w = os.pipe()      # we write commands, chromium reads fd 3
        self.from_r, self.from_w = os.pipe()  # chromium writes fd 4, we read
        self.deadline = time.monotonic() + DEADLINE_S
        self.buffer = b""
        self.next_id = 0
        self.events = []
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--user-data-dir=" + profile, "--remote-debugging-pipe",
                "about:blank"]

        def fds():
            os.dup2(self.to_r, 3)
            os.dup2(self.from_w, 4)

        self.proc = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(self.to_r)
        os.close(self.from_w)

    def _read_message(self):
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                fail("the browser did not answer within %d s" % DEADLINE_S)
            ready, _, _ = select.select([self.from_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.from_r, 65536)
            if not chunk:
                fail("the browser closed its DevTools pipe (exit code %s)" % self.proc.poll())
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method, params=None, session=None):
        self.next_id += 1
        command = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self.to_w, json.dumps(command).encode() + b"\0")
        while True:
            message = self._read_message()
            if message.get("id") == self.next_id:
                if "error" in message:
                    fail("%s: %s" % (method, message["error"]))
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method, seconds):
        end = min(self.deadline, time.monotonic() + seconds)
        for e in self.events:
            if e.get("method") == method:
                return True
        while time.monotonic() < end:
            ready, _, _ = select.select([self.from_r], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            chunk = os.read(self.from_r, 65536)
            if not chunk:
                break
            self.buffer += chunk
            while b"\0" in self.buffer:
                message, _, self.buffer = self.buffer.partition(b"\0")
                message = json.loads(message)
                self.events.append(message)
                if message.get("method") == method:
                    return True
        return False

    def close(self):
        try:
            os.write(self.to_w, json.dumps({"id": 999999, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def load(browser, path):
    """Opens file://path in a new page; returns (problems, network URLs, page checks)."""
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        browser.call(domain + ".enable", session=session)
    browser.events = []
    url = "file://" + path
    browser.call("Page.navigate", {"url": url}, session=session)
    if not browser.wait_event("Page.loadEventFired", 20):
        fail("%s did not finish loading within 20 s" % path)
    browser.wait_event("never", 1.0)  # late console messages and requests
    checks = browser.call("Runtime.evaluate", {"returnByValue": True, "expression": """JSON.stringify({
        title: document.title,
        summary: (document.getElementById('summary') || {}).innerText || '',
        verdict: (document.getElementById('verdict') || {}).innerText || '',
        text: document.body ? document.body.innerText : '',
        cell: (document.querySelector('td[data-pair="exit-mombasa>youth-welfare-mombasa"]') || {}).className || '',
        cell_security: (document.querySelector('td[data-pair="exit-mombasa>security-coast"]') || {}).className || '',
        height: document.body ? document.body.scrollHeight : 0,
        styled: document.body ? getComputedStyle(document.querySelector('.widens') || document.body).backgroundColor : ''
    })"""}, session=session)
    problems, requests = [], []
    for e in browser.events:
        if e.get("sessionId") != session:
            continue
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            problems.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append("console.%s: %s" % (params.get("type"), json.dumps(params.get("args"))[:300]))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            problems.append("log error: " + params["entry"].get("text", "")[:300])
        elif method == "Network.requestWillBeSent":
            request_url = params.get("request", {}).get("url", "")
            if request_url != url:
                requests.append(request_url)
    browser.call("Target.closeTarget", {"targetId": target})
    return problems, requests, json.loads(checks["result"]["value"])


def main():
    if len(sys.argv) != 3:
        fail("usage: diff_page_test.py LIAISON_BIN SOURCE_DIR")
    liaison, source = sys.argv[1], sys.argv[2]
    chromium = find_chromium()
    work = tempfile.mkdtemp(prefix="liaison-diff-page-")
    try:
        before, after = os.path.join(work, "before"), os.path.join(work, "after")
        shutil.copytree(os.path.join(source, "policies"), before)
        shutil.copytree(os.path.join(source, "policies"), after)
        exit_file = os.path.join(after, "agencies", "exit-mombasa.yaml")
        with open(exit_file) as f:
            text = f.read()
        edited = text.replace("subject.date_of_birth: generalize(age-band)", "subject.date_of_birth: allow", 1)
        edited = edited.replace("kinds: [security-agency]", "kinds: [prison-service]", 1)
        if edited == text:
            fail("the example policy no longer has the lines this test edits")
        with open(exit_file, "w") as f:
            f.write(edited)
        page = os.path.join(work, "preview.html")
        run = subprocess.run([liaison, "policy", "diff", before, after, "--html", page],
                             capture_output=True, text=True, timeout=60)
        if run.returncode != 3:
            fail("policy diff exited %d, expected 3 (widens):\n%s%s" % (run.returncode, run.stdout, run.stderr))
        with open(page) as f:
            html = f.read()
        if re.search(r"<(script|link|img|iframe)\b|https?://|src=", html, re.I):
            fail("the page is not self-contained")

        # A control page that errs and fetches: the harness must see both.
        bad = os.path.join(work, "bad.html")
        with open(bad, "w") as f:
            f.write("<!DOCTYPE html><html><body><p>x</p><img src=\"http://127.0.0.1:9/x.png\">"
                    "<script>console.error('control error')</script></body></html>")

        browser = Browser(chromium, os.path.join(work, "profile"))
        try:
            problems, requests, _ = load(browser, bad)
            if not problems or not requests:
                fail("the harness missed the control page's console error (%s) or request (%s)" % (problems, requests))
            problems, requests, checks = load(browser, page)
        finally:
            browser.close()
        if problems:
            fail("console errors on the page: %s" % problems)
        if requests:
            fail("the page made network requests: %s" % requests)
        expect = {
            "title": "liaison policy change preview",
            "cell": "widens",
            "cell_security": "changed",
        }
        for key, value in expect.items():
            if checks.get(key) != value:
                fail("%s is %r, expected %r" % (key, checks.get(key), value))
        for needle in ("1 flows newly denied, 0 newly released, 1 fields newly shared (1 with youth-welfare)",):
            if needle not in checks["summary"]:
                fail("summary %r lacks %r" % (checks["summary"], needle))
        for needle in ("This change WIDENS what is shared.", "subject.date_of_birth", "generalize(age-band)",
                       "exit-mombasa.yaml", "denied (no-release-rule)"):
            if needle not in checks["text"]:
                fail("the rendered page lacks %r" % needle)
        if checks["height"] < 200:
            fail("the page rendered %d px high: nothing shown?" % checks["height"])
        if checks["styled"] in ("", "rgba(0, 0, 0, 0)"):
            fail("the inline style was not applied (widens background %r)" % checks["styled"])
        print("PASS: rendered (%d px), no console errors, no network requests, shows the known changes"
              % checks["height"])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
