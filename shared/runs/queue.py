"""The runs queue (SYNC_QUEUE_NAME in AzureWebJobsStorage): one message = one slice of one run.

Messages are base64-encoded JSON, the encoding the Functions host's queue trigger expects by
default (host.json `messageEncoding: base64`)."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, ExponentialRetry, QueueClient

from shared.errors import Retriable, ServiceError
from shared.storage.transport import storage_transport

log = logging.getLogger(__name__)


class QueueUnavailable(Retriable, ServiceError):
    status = 503
    code = "queue_unavailable"


@dataclass(frozen=True)
class SliceMessage:
    userId: str
    integrationId: str
    runId: str
    seq: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, body: bytes | str) -> "SliceMessage":
        """Raises ValueError for a body that is not one of ours (it then ends in the poison queue)."""
        data: Any = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("a run message is a JSON object")
        try:
            message = cls(str(data["userId"]), str(data["integrationId"]), str(data["runId"]), int(data["seq"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a run message: {error}") from None
        return message


class _ClockedRetry(ExponentialRetry):
    """The SDK's exponential retry, waiting through the app's clock (a test's clock advances
    instead of waiting; the real one sleeps)."""

    def __init__(self, sleep: Callable[[float], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sleep = sleep

    def sleep(self, settings: dict[str, Any], transport: Any) -> None:
        backoff = self.get_backoff_time(settings)
        if backoff and backoff > 0:
            self._sleep(backoff)


class RunQueue:
    def __init__(self, connection_string: str, name: str, *, account_url: str | None = None, credential: Any = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = name
        kwargs: dict[str, Any] = {
            "message_encode_policy": BinaryBase64EncodePolicy(),
            "message_decode_policy": BinaryBase64DecodePolicy(),
            # An HTTP caller waits on a send: fail within seconds, not the SDK's default minute.
            "retry_policy": _ClockedRetry(sleep, initial_backoff=1, increment_base=2, retry_total=2),
            **storage_transport(connection_timeout=5),
        }
        if account_url:
            self._client = QueueClient(account_url, name, credential=credential, **kwargs)
        else:
            self._client = QueueClient.from_connection_string(connection_string, name, **kwargs)
        if account_url:
            self._poison = QueueClient(account_url, f"{name}-poison", credential=credential, **kwargs)
        else:
            self._poison = QueueClient.from_connection_string(connection_string, f"{name}-poison", **kwargs)
        self._created = False
        self._lock = threading.Lock()

    @property
    def client(self) -> QueueClient:
        return self._client

    @property
    def poison(self) -> QueueClient:
        return self._poison

    def _ensure(self) -> None:
        with self._lock:
            if self._created:
                return
            try:
                self._client.create_queue()
            except ResourceExistsError:
                pass
            self._created = True

    def send(self, message: SliceMessage, *, delay_seconds: int = 0) -> None:
        """Enqueue a slice; QueueUnavailable (503) when storage refuses, so nothing is half-queued."""
        try:
            self._ensure()
            self._client.send_message(message.encode(), visibility_timeout=max(0, min(int(delay_seconds), 7 * 24 * 3600)))
        except AzureError as error:
            log.warning("runs queue %s refused a message: %s", self.name, type(error).__name__)
            raise QueueUnavailable(f"The runs queue is unavailable ({type(error).__name__}); nothing was queued, try again") from None
