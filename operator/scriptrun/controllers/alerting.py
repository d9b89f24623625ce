"""spec.alerts' webhook channel: a Slack-compatible message per fired alert, at most one per
(namespace, alert, channel) within the rule's de-duplication window.

Receivers are named in the operator's configuration (a JSON file {name: url}, from a Secret: a
Slack webhook URL is a credential), never in a run: a run names a channel, the operator knows where
it goes. Messages are posted in the background with a timeout, so a slow receiver never holds up a
reconcile. The window is kept in memory: a restarted operator may send one more message for an
alert already sent in the current window."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scriptrun.model.alerts import AlertRule, FiredAlert

log = logging.getLogger(__name__)
COLOURS = {"info": "#439fe0", "warning": "#daa038", "critical": "#d00000"}
POST_TIMEOUT = 10.0
MAX_WINDOW = 7 * 24 * 3600.0

Outcome = Callable[[str, str, str], None]  # (namespace, channel, outcome: sent|suppressed|failed|unknown-channel)


def load_webhooks(path: str | None) -> dict[str, str]:
    """{channel: url} from the file the chart mounts from a Secret; ValueError names what is wrong."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"SCRIPTRUN_ALERT_WEBHOOKS_FILE={path}: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"SCRIPTRUN_ALERT_WEBHOOKS_FILE={path}: expected a JSON object of channel name -> URL")
    bad = [k for k, v in data.items() if not v.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"SCRIPTRUN_ALERT_WEBHOOKS_FILE={path}: not an http(s) URL for {', '.join(sorted(bad))}")
    return dict(data)


def slack_payload(kind: str, namespace: str, name: str, alert: FiredAlert) -> dict[str, Any]:
    """Slack's incoming-webhook shape (`text` plus a coloured attachment); Mattermost, Rocket.Chat
    and most chat webhooks read the same."""
    title = f"[{alert.severity}] {alert.name} on {kind} {namespace}/{name}"
    return {
        "text": f"{title}: {alert.message}",
        "attachments": [
            {
                "color": COLOURS[alert.severity],
                "title": title,
                "text": alert.message,
                "fields": [
                    {"title": "namespace", "value": namespace, "short": True},
                    {"title": kind, "value": name, "short": True},
                    {"title": "severity", "value": alert.severity, "short": True},
                    {"title": "fired at", "value": alert.fired_at, "short": True},
                ],
                "footer": "scriptrun",
            }
        ],
    }


class AlertNotifier:
    def __init__(
        self,
        webhooks: Mapping[str, str],
        outcome: Outcome = lambda *_: None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.webhooks = dict(webhooks)
        self.outcome = outcome
        self.clock = clock
        self.sent: dict[tuple[str, str, str], float] = {}  # (namespace, alert, channel) -> when sent
        self.tasks: set[asyncio.Task[None]] = set()
        self._session: Any = None

    def fired(self, kind: str, namespace: str, name: str, rules: list[AlertRule], alerts: list[FiredAlert]) -> None:
        """A run's newly fired alerts: post to each rule's channels unless one was sent in its window."""
        by_name = {r.name: r for r in rules}
        now = self.clock()
        self._forget(now)
        for alert in alerts:
            rule = by_name.get(alert.name)
            if rule is None:
                continue
            for channel in rule.channels or []:
                url = self.webhooks.get(channel)
                if url is None:
                    log.warning(
                        "alert %s on %s/%s: no webhook channel %r configured", alert.name, namespace, name, channel
                    )
                    self.outcome(namespace, channel, "unknown-channel")
                    continue
                key = (namespace, alert.name, channel)
                last = self.sent.get(key)
                if last is not None and now - last < rule.dedup_seconds:
                    self.outcome(namespace, channel, "suppressed")
                    continue
                self.sent[key] = now
                task = asyncio.get_running_loop().create_task(
                    self._post(namespace, channel, url, slack_payload(kind, namespace, name, alert))
                )
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def _forget(self, now: float) -> None:
        if len(self.sent) > 1000:
            self.sent = {k: t for k, t in self.sent.items() if now - t < MAX_WINDOW}

    async def _post(self, namespace: str, channel: str, url: str, payload: dict[str, Any]) -> None:
        import aiohttp  # kubernetes_asyncio's HTTP client, already in the operator

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT))
        try:
            async with self._session.post(url, json=payload) as response:
                ok = 200 <= response.status < 300
                if not ok:
                    log.warning("alert webhook %r answered %d", channel, response.status)
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("alert webhook %r failed: %s", channel, type(err).__name__)
            ok = False
        self.outcome(namespace, channel, "sent" if ok else "failed")

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=POST_TIMEOUT)
        if self._session is not None:
            await self._session.close()
