"""Managed identity for storage: one DefaultAzureCredential per process, made on first use.

In Azure it finds the function app's managed identity (no secret in any setting); locally it
falls back to the developer's `az login`. Connection strings stay for Azurite and local use."""
from __future__ import annotations

from functools import cache
from typing import Any


@cache
def storage_credential() -> Any:
    """The process's DefaultAzureCredential (sync clients: tables, queues)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


@cache
def async_storage_credential() -> Any:
    """The aio twin, for the aio Tables client of the batched writer (aio clients need it)."""
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()
