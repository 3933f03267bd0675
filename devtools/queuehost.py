"""Queue triggers for the local host, as the Functions host serves them (dev only).

Per queue-triggered folder: poll its queue (`queueName` with %SETTING% resolved, `connection`
naming a setting), run up to `batchSize` messages at once, delete a message when `main`
returns, make it visible again after `visibilityTimeout` when `main` raises, and move it to
`<queue>-poison` after `maxDequeueCount` attempts: the options of host.json's
`extensions.queues`, with the host's defaults. Messages are base64 as the host expects."""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

logger = logging.getLogger("devtools.queuehost")
_SETTING = re.compile(r"%([^%]+)%")


#: The longest wait between polls of an empty queue. The host backs off to a minute (cheap in Azure,
#: where each poll is billed); locally Azurite is in memory and a queued run should start at once
#: (the demo's progress line, the tests), so the local host polls every 50 ms.
LOCAL_MAX_POLLING_INTERVAL = 0.05


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = LOCAL_MAX_POLLING_INTERVAL
    processing_seconds: int = 600  # invisible while main runs (the host renews; functionTimeout here)

    @classmethod
    def from_host_json(cls, app_root: Path) -> "QueueOptions":
        path = app_root / "host.json"
        if not path.is_file():
            return cls()
        host = json.loads(path.read_text(encoding="utf-8-sig"))
        queues = host.get("extensions", {}).get("queues", {})
        return cls(
            batch_size=int(queues.get("batchSize", 16)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=_seconds(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=min(_seconds(queues.get("maxPollingInterval", "00:00:02")), LOCAL_MAX_POLLING_INTERVAL),
            processing_seconds=int(_seconds(host.get("functionTimeout", "00:10:00"))),
        )


def _seconds(value: str) -> float:
    hours, minutes, seconds = (value.split(":") + ["0", "0"])[:3]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def resolve(value: str) -> str:
    """`%NAME%` app-setting expressions, as the host resolves them in bindings (a missing
    setting is an error there too: the function does not start)."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if not os.environ.get(name):
            raise RuntimeError(f"the app setting {name} (used by a queue binding) is not set")
        return os.environ[name]

    return _SETTING.sub(setting, value)


class QueueListener:
    """Polls one queue for one function on a daemon thread."""

    def __init__(self, name: str, binding: dict[str, Any], entry: Callable[[QueueMessage], Any], options: QueueOptions) -> None:
        self.function = name
        self.queue_name = resolve(binding["queueName"])
        connection = os.environ.get(binding.get("connection") or "AzureWebJobsStorage") or os.environ.get("AzureWebJobsStorage", "")
        self._client = QueueClient.from_connection_string(connection, self.queue_name)
        self._poison = QueueClient.from_connection_string(connection, f"{self.queue_name}-poison")
        self._entry = entry
        self._options = options
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=options.batch_size, thread_name_prefix=f"queue-{name}")
        self._thread: threading.Thread | None = None
        self._busy = 0
        self._lock = threading.Lock()
        self.processed = 0

    def start(self) -> "QueueListener":
        for client in (self._client, self._poison):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
        self._thread = threading.Thread(target=self._poll, name=f"queue-{self.function}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=False)

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._busy == 0

    def _poll(self) -> None:
        wait = min(0.05, self._options.max_polling_interval)
        while not self._stop.is_set():
            with self._lock:
                room = self._options.batch_size - self._busy
            if room <= 0:
                self._stop.wait(0.05)
                continue
            try:
                messages = list(self._client.receive_messages(max_messages=min(32, room), visibility_timeout=self._options.processing_seconds))
            except AzureError as error:
                logger.warning("%s: cannot read queue %s (%s)", self.function, self.queue_name, type(error).__name__)
                messages = []
            if not messages:
                self._stop.wait(wait)
                wait = min(self._options.max_polling_interval, wait * 2)
                continue
            wait = min(0.05, self._options.max_polling_interval)
            for message in messages:
                with self._lock:
                    self._busy += 1
                self._pool.submit(self._run, message)

    def _run(self, message: Any) -> None:
        try:
            body = base64.b64decode(message.content) if isinstance(message.content, str) else message.content
        except ValueError:
            body = message.content.encode() if isinstance(message.content, str) else message.content
        trigger = QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt)
        try:
            self._entry(trigger)
            self._client.delete_message(message)
        except Exception:  # noqa: BLE001 - as the host: log, retry later, poison at the limit
            logger.exception("%s failed on message %s (attempt %d)", self.function, message.id, message.dequeue_count)
            self._retry_or_poison(message)
        finally:
            with self._lock:
                self._busy -= 1
                self.processed += 1

    def _retry_or_poison(self, message: Any) -> None:
        try:
            if message.dequeue_count >= self._options.max_dequeue_count:
                self._poison.send_message(message.content)
                self._client.delete_message(message)
                logger.warning("%s: message %s moved to %s-poison", self.function, message.id, self.queue_name)
            else:
                self._client.update_message(message, visibility_timeout=int(self._options.visibility_timeout))
        except (AzureError, ResourceNotFoundError) as error:
            logger.warning("%s: could not return message %s (%s)", self.function, message.id, type(error).__name__)


def queue_bindings(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in config.get("bindings", []) if b.get("type") == "queueTrigger"]


__all__ = ["QueueListener", "QueueOptions", "queue_bindings", "resolve", "func"]
