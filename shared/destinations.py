"""Where the service may send things: BC origins (BC_ALLOWED_HOSTS) and public webhook hosts.

A bearer token or a signed webhook body must never reach a host the operator did not intend:
`baseUrl` is checked against an allowlist of https origins, `webhookUrl` against the public
address rule (design.md section 12), both when saved and again right before use."""
from __future__ import annotations

import ipaddress
import socket
from typing import Callable
from urllib.parse import urlsplit

from shared.errors import Configuration, ConfigurationError, ValidationError

Origin = tuple[str, str, int]  # (scheme, lower-case host, port)
_DEFAULT_PORTS = {"https": 443, "http": 80}
#: CGNAT (RFC 6598) is not `is_private` in every Python version; named explicitly.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) with the default port filled in, or None when it is not a URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in _DEFAULT_PORTS:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme]


# -- BC_ALLOWED_HOSTS ------------------------------------------------------------------------------
def parse_allowed_hosts(raw: str) -> tuple[str, ...]:
    """`host` or `host:port` entries (no port = 443, `*.` wildcards) as normalised `host:port`."""
    entries = []
    for item in raw.split(","):
        entry = item.strip().lower()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if not sep:
            host, port = entry, "443"
        label = host[2:] if host.startswith("*.") else host
        if not port.isdigit() or not 0 < int(port) < 65536 or not label or "*" in label or "/" in label:
            raise ConfigurationError(f"BC_ALLOWED_HOSTS: '{item.strip()}' is not a host or host:port (wildcards as *.example.com)")
        entries.append(f"{host}:{int(port)}")
    if not entries:
        raise ConfigurationError("BC_ALLOWED_HOSTS is set but names no host")
    return tuple(entries)


def default_allowed_hosts(bc_api_base_url: str) -> tuple[str, ...]:
    origin = origin_of(bc_api_base_url)
    if origin is None:
        raise ConfigurationError(f"BC_API_BASE_URL is not an absolute URL: {bc_api_base_url!r}")
    return (f"{origin[1]}:{origin[2]}",)


def host_allowed(host: str, port: int, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        pattern, _, entry_port = entry.rpartition(":")
        if int(entry_port) != port:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def check_base_url(url: str | None, allowed: tuple[str, ...]) -> None:
    """400 naming baseUrl unless it is an https URL on an allowed host:port."""
    if url is None:
        return
    origin = origin_of(url)
    if origin is None or origin[0] != "https":
        raise ValidationError("baseUrl: must be an https URL")
    if "?" in url or "#" in url:
        raise ValidationError("baseUrl: must not carry a query or fragment")
    if not host_allowed(origin[1], origin[2], allowed):
        raise ValidationError(
            f"baseUrl: host {origin[1]}:{origin[2]} is not in BC_ALLOWED_HOSTS ({', '.join(allowed)})"
        )


# -- public addresses (webhooks) ------------------------------------------------------------------
def is_public(address: str) -> bool:
    """False for loopback, private, link-local, unique-local, CGNAT, multicast, unspecified,
    reserved, and for IPv4-mapped / 6to4-style IPv6 forms of any of those."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(str(ip.ipv4_mapped))
        if ip.sixtofour is not None and not is_public(str(ip.sixtofour)):
            return False
        if ip.teredo is not None:
            return False
        if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 of an IPv4 address
            return is_public(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return False
    return not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    ) and ip.is_global


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to (a literal IP resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class UnsafeDestination(Configuration):
    """A webhook URL the rules refuse; the message says which rule (never raised to HTTP as is)."""


def webhook_addresses(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> tuple[Origin, list[str]]:
    """Check a webhook URL and return its origin and the addresses to connect to.

    https only (plain http only to loopback when private addresses are allowed, for local
    development); every resolved address must be public unless `allow_private`."""
    origin = origin_of(url)
    if origin is None:
        raise UnsafeDestination("must be an absolute https URL")
    scheme, host, port = origin
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UnsafeDestination("must be an absolute https URL") from None
    if parts.username or parts.password:
        raise UnsafeDestination("must not carry credentials")
    if scheme != "https":
        loopback = host == "localhost"
        try:
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        except ValueError:
            pass
        if not (allow_private and loopback):
            raise UnsafeDestination("must use https")
    if allow_private:
        return origin, []
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as error:
        raise UnsafeDestination(f"host {host} does not resolve ({type(error).__name__})") from None
    if not addresses:
        raise UnsafeDestination(f"host {host} does not resolve")
    refused = [a for a in addresses if not is_public(a)]
    if refused:
        raise UnsafeDestination(f"host {host} resolves to a non-public address ({refused[0]}); only public addresses are allowed")
    return origin, addresses


def check_webhook_url(url: str | None, *, allow_private: bool, resolver: Resolver = resolve) -> None:
    """400 naming webhookUrl when the URL breaks a rule (called when it is saved)."""
    if url is None:
        return
    try:
        webhook_addresses(url, allow_private=allow_private, resolver=resolver)
    except UnsafeDestination as error:
        raise ValidationError(f"webhookUrl: {error}") from None
