"""Managed identity for storage: one DefaultAzureCredential per process, made on first use.

In Azure it finds the function app's managed identity (no secret in any setting); locally it
falls back to the developer's `az login`. Connection strings stay for Azurite and local use."""
from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_sync: Any = None
_async: Any = None


def storage_credential() -> Any:
    """The process's DefaultAzureCredential (sync clients: tables, queues)."""
    global _sync
    with _lock:
        if _sync is None:
            from azure.identity import DefaultAzureCredential

            _sync = DefaultAzureCredential()
        return _sync


def async_storage_credential() -> Any:
    """The aio twin, for the aio Tables client of the batched writer (aio clients need it)."""
    global _async
    with _lock:
        if _async is None:
            from azure.identity.aio import DefaultAzureCredential

            _async = DefaultAzureCredential()
        return _async
