"""Prometheus ``/metrics`` and ``/health`` on ``metrics.listen`` (off by default).

Each scrape reads the same report as ``syncd status`` (``statusreport.gather``) in a
worker thread and turns it into metrics, so the figures never disagree with the CLI
and nothing in the daemon has to keep counters twice. Served with aiohttp; metric
text comes from prometheus-client. ``/health`` answers 503 with the failing parts (an
inbox failed or refused its login, a store that cannot be read, a spool that cannot be
written), 200 otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from syncd.config.model import Config
from syncd.services import statusreport
from syncd.services.schedule import Every
from syncd.store.timestamps import to_epoch

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("syncd.services.metrics")


def metrics_from(report: dict[str, Any]) -> Iterator[Metric]:
    """Prometheus metric families from a ``status --json`` report (pure)."""
    bcc, outbox = report.get("bcc") or {}, report.get("outbox") or {}
    yield _counter("syncd_bcc_accepted", "BCC messages accepted (250)", bcc.get("accepted", 0))
    refused = CounterMetricFamily("syncd_bcc_refused", "BCC messages refused", labels=["reason"])
    for reason, value in sorted((bcc.get("refused_by_reason") or {}).items()):
        refused.add_metric([reason], value)
    yield refused
    yield _counter(
        "syncd_bcc_temporary_failures",
        "BCC messages answered 451 (store or DNS trouble)",
        bcc.get("temporary_failures", 0),
    )
    # From the running daemon's heartbeat: since it started.
    yield _counter("syncd_bcc_auth_failures", "Failed SMTP logins", bcc.get("auth_failures", 0))
    yield _counter(
        "syncd_bcc_auth_throttled",
        "SMTP logins refused unchecked (454) while an IP or account was locked",
        bcc.get("auth_throttled", 0),
    )
    yield _gauge(
        "syncd_bcc_spool_depth", "Messages acknowledged, not yet logged", bcc.get("spool_depth", 0)
    )
    yield _gauge("syncd_outbox_depth", "extra_bcc copies waiting", outbox.get("depth", 0))
    yield _counter("syncd_outbox_forwarded", "extra_bcc copies sent", outbox.get("forwarded", 0))
    yield _gauge("syncd_outbox_given_up", "extra_bcc copies given up", outbox.get("given_up", 0))
    yield from _submission_metrics(report.get("submission") or {})
    yield _gauge("syncd_quarantine_messages", "Messages in quarantine", report.get("quarantine", 0))
    inbox_up = GaugeMetricFamily(
        "syncd_inbox_up", "1 when the inbox's last pass was ok", labels=["inbox"]
    )
    logged = CounterMetricFamily(
        "syncd_folder_logged", "Emails logged per folder", labels=["inbox", "folder"]
    )
    last_uid = GaugeMetricFamily(
        "syncd_folder_last_uid", "Last UID synced", labels=["inbox", "folder"]
    )
    last_success = GaugeMetricFamily(
        "syncd_last_success_timestamp_seconds",
        "Unix time a pass last got through the folder without error",
        labels=["inbox", "folder"],
    )
    next_retry = GaugeMetricFamily(
        "syncd_next_retry_timestamp_seconds",
        "Unix time the daemon will try a failed inbox again",
        labels=["inbox"],
    )
    for inbox in report.get("inboxes", []):
        inbox_up.add_metric([inbox["name"]], 1.0 if inbox["state"] == "ok" else 0.0)
        if inbox.get("next_retry"):
            next_retry.add_metric([inbox["name"]], to_epoch(inbox["next_retry"]))
        for folder in inbox["folders"]:
            labels = [inbox["name"], folder["name"]]
            logged.add_metric(labels, folder["logged"])
            last_uid.add_metric(labels, folder["last_uid"] or 0)
            if folder.get("last_sync"):
                last_success.add_metric(labels, to_epoch(folder["last_sync"]))
    yield from (inbox_up, logged, last_uid, last_success, next_retry)
    yield from _tracking_metrics(report.get("tracking") or {})
    if "store" in report:
        store = report["store"]
        yield _gauge("syncd_store_bytes", "SQLite file and WAL, in bytes", store["bytes"])
        yield _gauge(
            "syncd_attachments_bytes",
            "Attachment files the store holds, each content once, in bytes",
            store["attachments_bytes"],
        )


def _tracking_metrics(tracking: dict[str, Any]) -> Iterator[Metric]:
    """Tracked messages and hits by kind and verdict, as the store counts them."""
    if not tracking:
        return
    yield _counter(
        "syncd_tracking_messages", "Messages relayed with tracking", tracking.get("messages", 0)
    )
    hits = CounterMetricFamily(
        "syncd_tracking_hits",
        "Opens and clicks recorded, by verdict (only human ones count as a person's)",
        labels=["kind", "verdict"],
    )
    for kind, field in (("open", "opens"), ("click", "clicks")):
        for verdict, value in sorted((tracking.get(field) or {}).items()):
            hits.add_metric([kind, verdict], value)
    yield hits
    # From the running daemon's heartbeat: since it started.
    yield _counter(
        "syncd_tracking_dropped",
        "Hits not stored because the queue was full (or the store failed at stop)",
        tracking.get("dropped", 0),
    )
    yield _counter(
        "syncd_tracking_rate_limited",
        "Requests over the per-IP rate limit: answered, not recorded",
        tracking.get("rate_limited", 0),
    )
    yield _counter(
        "syncd_tracking_not_recorded",
        "HEAD and prefetch requests: answered, not recorded",
        tracking.get("not_recorded", 0),
    )
    yield _counter(
        "syncd_tracking_bad_tokens",
        "Requests with a forged or damaged token",
        tracking.get("bad_tokens", 0),
    )
    yield _gauge("syncd_tracking_queue", "Hits waiting for the store", tracking.get("queue", 0))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class _ReportCollector:
    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        return metrics_from(self.report)


def render(report: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report))  # type: ignore[arg-type]
    return generate_latest(registry)


class MetricsService:
    """The daemon's metrics endpoint."""

    name = "metrics"

    def __init__(
        self,
        config: Config,
        unsaved: Callable[[], Mapping[str, int]] | None = None,
        spool_trouble: Callable[[], str | None] | None = None,
    ) -> None:
        assert config.metrics.listen is not None
        self._config = config
        self._unsaved = unsaved  # the BCC endpoint's counts not in the store yet
        self._spool_trouble = spool_trouble  # why the store or the BCC spool fails, if so
        self._listen = config.metrics.listen
        self._runner: web.AppRunner | None = None
        self._web: Any = None  # the aiohttp.web module, once serving

    async def start(self, every: Every) -> None:
        from aiohttp import (
            web,
        )  # only with metrics.listen set: aiohttp's memory is paid only when used

        self._web = web
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._listen.host, self._listen.port).start()

    async def _report(self) -> dict[str, Any]:
        return await asyncio.to_thread(statusreport.gather, self._config)

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            report = await self._report()
        except Exception as exc:
            # A store that cannot even be read still leaves the in-memory counts to show.
            log.warning("metrics: cannot read the store: %s", exc)
            report = {}
        if self._unsaved is not None:
            report = statusreport.with_unsaved(report, self._unsaved())
        body = render(report)
        return self._web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        report: dict[str, Any] | None
        trouble = self._spool_trouble() if self._spool_trouble is not None else None
        try:
            report = await self._report()
        except Exception as exc:
            log.warning("health check: cannot read the store: %s", exc)
            report, trouble = None, f"store unreadable: {exc}"
        body = statusreport.health(report, trouble)
        return self._web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def stop(self, deadline: float) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reconfigure(self, config: Config) -> None:
        self._config = config  # a new listen address needs a restart

    def status(self) -> dict[str, Any]:
        return {"listen": str(self._listen)}

    def summary(self) -> str:
        return f"metrics on {self._listen}"


def _submission_metrics(sub: dict[str, Any]) -> Iterator[Metric]:
    """The submission relay's counters (``status --json``'s ``submission``)."""
    yield _counter(
        "syncd_submission_messages", "Messages submitted (DATA)", sub.get("submissions", 0)
    )
    yield _counter(
        "syncd_submission_relayed",
        "Messages the smarthost accepted, recorded for the CRM",
        sub.get("relayed", 0),
    )
    refused = CounterMetricFamily(
        "syncd_submission_refused", "Submissions refused", labels=["reason"]
    )
    for reason, value in sorted((sub.get("refused_by_reason") or {}).items()):
        refused.add_metric([reason], value)
    yield refused
    yield _counter(
        "syncd_submission_temporary_failures",
        "Submissions answered 4xx by syncd (smarthost unreachable, store failing)",
        sub.get("temporary_failures", 0),
    )
    yield _counter(
        "syncd_submission_worker_restarts",
        "Times the relay worker process died and was replaced, since the daemon started",
        sub.get("worker_restarts", 0),
    )
