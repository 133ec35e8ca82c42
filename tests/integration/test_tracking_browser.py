"""Open and click tracking end to end in a real browser: the real ``syncd run`` daemon
relays an HTML mail submitted with smtplib (AUTH) to a real aiosmtpd sink; the relayed
HTML is opened in a real headless Chromium driven by selenium (Debian's ``chromium`` and
``chromium-driver``), which loads the pixel and clicks the link. The open and the click
must be recorded as human and the browser must land on the destination page."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from syncd.outbound.tokens import new_key_line
from tests.integration.conftest import Notify, as_json, free_port, syncd_run, wait_for
from tests.integration.test_bcc import Sink

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CLIENT = "client@customer.example"
PASSWORD = "ada-browser-pw"
# Without these Chromium reaches for Google's hosts (updates, sync, QUIC probes).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium missing (apt-get install chromium)"
)


class Site:
    """A tiny web server on loopback: the link's destination, a page titled "landed"."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"<!doctype html><title>landed</title><p>Welcome.</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink([])
    yield s
    s.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(15)
    yield driver
    driver.quit()


def html_mail(destination: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Ada <ada@example.com>"
    message["To"] = f"Client <{CLIENT}>"
    message["Subject"] = "Our offer"
    message["Message-ID"] = "<browser-1@example.com>"
    message.set_content("See the offer: " + destination)
    message.add_alternative(
        f'<html><body><p>See <a id="offer" href="{destination}">the offer</a>.</p></body></html>',
        subtype="html",
    )
    return message.as_bytes(policy=email.policy.SMTP)


def test_relayed_html_opened_and_clicked_in_headless_chromium(
    tmp_path: Path, notify: Notify, site: Site, sink: Sink, browser: Any
) -> None:
    (tmp_path / "ada.pw").write_text(PASSWORD)
    (tmp_path / "ada.pw").chmod(0o600)
    secret = tmp_path / "tracking.key"
    secret.write_text(new_key_line("k1") + "\n")
    secret.chmod(0o600)
    submission_port, tracking_port = free_port(), free_port()
    public = f"http://127.0.0.1:{tracking_port}"
    config = tmp_path / "syncd.yaml"
    config.write_text(
        json.dumps(
            {
                "store": {
                    "path": str(tmp_path / "var" / "syncd.sqlite3"),
                    "attachments_dir": str(tmp_path / "var" / "attachments"),
                },
                "team": [
                    {
                        "name": "Ada",
                        "email": "ada@example.com",
                        "smtp_password_file": str(tmp_path / "ada.pw"),
                    }
                ],
                "relay": {"host": "127.0.0.1", "port": sink.port, "security": "none"},
                "submission": {"listen": f"127.0.0.1:{submission_port}", "require_tls": False},
                # The test's browser opens and clicks at once, and from the address Ada
                # submitted from (127.0.0.1): with the default windows that is correctly a
                # prefetch, a scanner and the sender herself. Zero them for this reader.
                "tracking": {
                    "enabled": True,
                    "listen": f"127.0.0.1:{tracking_port}",
                    "public_url": public,
                    "secret_file": str(secret),
                    "prefetch_seconds": 0,
                    "scanner_seconds": 0,
                    "self_days": 0,
                },
            }
        )
    )
    destination = f"http://127.0.0.1:{site.port}/landing?from=mail"
    with syncd_run(config, notify) as daemon:
        with smtplib.SMTP("127.0.0.1", submission_port, timeout=10) as client:
            client.login("ada@example.com", PASSWORD)
            client.sendmail("ada@example.com", [CLIENT], html_mail(destination))
        assert len(sink.received) == 1
        _, recipients, relayed = sink.received[0]
        assert recipients == [CLIENT]
        parsed = email.message_from_bytes(relayed, policy=email.policy.default)
        part = parsed.get_body(preferencelist=("html",))
        assert part is not None
        html = part.get_content()
        assert f"{public}/c/" in html and f"{public}/o/" in html  # link and pixel tracked
        assert destination not in html

        # The relayed mail reaches the store through the drain; wait for its engagement.
        wait_for(
            lambda: as_json(config, "timeline", CLIENT), 15, "the relayed mail in the timeline"
        )
        # Submitter addresses are stored to the second and self_days: 0 still matches an
        # address seen in the current second: open only once that second has passed.
        time.sleep(1 - time.time() % 1 + 0.05)

        # Opened from a file, as a mail client shows it; the pixel is fetched over http.
        page = tmp_path / "mail.html"
        page.write_text(html, encoding="utf-8")
        browser.get(page.as_uri())
        # Headless Chromium says so in its user agent; the verdict rules count it as a
        # person (a headless browser is how some readers' tools render mail).
        assert "HeadlessChrome" in browser.execute_script("return navigator.userAgent")
        opens = wait_for(
            lambda: [f for f in as_json(config, "tracking", "feed", "--all")
                     if f["kind"] == "open"],
            15, "the open in the feed",
        )  # fmt: skip
        browser.find_element("id", "offer").click()
        wait_for(lambda: browser.title == "landed", 15, "the destination page")
        assert browser.current_url == destination

        feed = wait_for(
            lambda: (
                (f := as_json(config, "tracking", "feed", "--all"))
                and any(i["kind"] == "click" for i in f)
                and f
            ),
            15,
            "the click in the feed",
        )
        assert {(i["kind"], i["verdict"]) for i in feed} == {("open", "human"), ("click", "human")}
        assert [i["verdict"] for i in opens] == ["human"]
        (entry,) = as_json(config, "timeline", CLIENT)
        assert entry["status"] == "clicked"
        tracking = entry["tracking"]
        assert tracking["opens"]["count"] >= 1
        assert tracking["clicks"]["count"] == 1
        assert tracking["clicks"]["links"] == [{"url": destination, "count": 1}]
        assert tracking["machine"]["opens"] == 0 and tracking["machine"]["clicks"] == 0
    assert PASSWORD not in daemon.stderr
