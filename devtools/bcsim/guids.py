"""GUIDs as Business Central stores them: SQL Server `uniqueidentifier` order and sequential SystemIds.

SQL Server compares a uniqueidentifier `00112233-4455-6677-8899-AABBCCDDEEFF` byte group by byte
group: `AABBCCDDEEFF` (left to right) first, then `8899`, then `7766`, `5544`, `33221100`. BC's
`$orderby=id`, `gt`/`lt` on GUIDs and `$skiptoken` follow that order, not the text order. The
simulator has its own copy of this rule on purpose: it models BC, never the service's code.
"""
from __future__ import annotations

import random
from typing import Callable

GuidKey = Callable[[str], str]


def sql_key(guid: str) -> str:
    """Text that sorts like SQL Server sorts the GUID (a bijection on well-formed GUIDs)."""
    g = guid.lower()
    return g[24:36] + g[19:23] + g[16:18] + g[14:16] + g[11:13] + g[9:11] + g[6:8] + g[4:6] + g[2:4] + g[0:2]


def text_key(guid: str) -> str:
    """The other reading: GUIDs compared as lower-case text."""
    return guid.lower()


ID_ORDERS: dict[str, GuidKey] = {"sql": sql_key, "text": text_key}


def guid_key_for(order: str) -> GuidKey:
    if order not in ID_ORDERS:
        raise ValueError(f"id_order must be one of {sorted(ID_ORDERS)}, not {order!r}")
    return ID_ORDERS[order]


class SequentialIds:
    """SystemIds the way BC (SQL Server NEWSEQUENTIALID) hands them out.

    Each "server tail" (the last two groups) has its own counter over the first three groups, in
    SQL significance: the first byte changes fastest (`0a91419f-7b01-f111-...`, `0b91419f-...`).
    A company's rows come from more than one tail (another server, a restart), switching every few
    dozen ids on average (`switch_every`), so any set of more than a few dozen rows is out of text
    order, as a real company's often is, and code that assumes text order fails in tests, not
    in production. Deterministic per rng.
    """

    def __init__(self, rng: random.Random, tails: int = 2, switch_every: int = 25) -> None:
        self.rng = rng
        self.switch_every = switch_every
        self.tails = [f"{rng.getrandbits(16) | 0x8000:04x}-{rng.getrandbits(48):012x}" for _ in range(tails)]
        # Group 3 reads like BC's ('f111', 'f011': its bytes are the counter's most significant).
        self.counters = [(0x11 << 56) | ((0xF1 - i) << 48) | rng.getrandbits(48) for i in range(tails)]
        self.current = 0
        self._left = self._run_length()  # ids until the other server hands them out

    def _run_length(self) -> int:
        return 1 + int(self.rng.random() * 2 * self.switch_every)

    def new_id(self) -> str:
        self._left -= 1
        if self._left <= 0 and len(self.tails) > 1:
            self.current = (self.current + 1) % len(self.tails)
            self._left = self._run_length()
        n = self.counters[self.current] = (self.counters[self.current] + 1 + int(self.rng.random() * 3)) % (1 << 64)
        b = n.to_bytes(8, "little").hex()
        return f"{b[0:8]}-{b[8:12]}-{b[12:16]}-{self.tails[self.current]}"
