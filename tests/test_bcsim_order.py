"""The simulator orders and generates GUIDs as BC (SQL Server uniqueidentifier) does."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.bcsim import DEMO_COMPANY_ID, BCSimulator
from devtools.bcsim.guids import sql_key
from tests.test_bcsim import bc_url, client, read_all

# Text order: A < C < B.  SQL Server order (last group first, then the first group right to left): C < B < A.
A = "00000001-0000-0000-0000-0000000000b0"
B = "ff000000-0000-0000-0000-0000000000b0"
C = "80000000-0000-0000-0000-0000000000a0"


def test_sql_key_matches_sql_server_significance() -> None:
    # SQL Server: bytes 10..15 decide first (left to right), then 8..9, then 7,6, then 5,4, then 3,2,1,0.
    ordered = ["01000000-0000-0000-0000-000000000000", "00010000-0000-0000-0000-000000000000",
               "00000100-0000-0000-0000-000000000000", "00000001-0000-0000-0000-000000000000",
               "00000000-0100-0000-0000-000000000000", "00000000-0001-0000-0000-000000000000",
               "00000000-0000-0100-0000-000000000000", "00000000-0000-0001-0000-000000000000",
               "00000000-0000-0000-0001-000000000000", "00000000-0000-0000-0100-000000000000",
               "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000100",
               "00000000-0000-0000-0000-010000000000"]
    assert sorted(reversed(ordered), key=sql_key) == ordered


@pytest.fixture(params=["sql", "text"])
def three(request: pytest.FixtureRequest) -> Iterator[tuple[BCSimulator, list[str]]]:
    with BCSimulator(seed=3, id_order=request.param) as s:
        for gid, name in ((A, "A"), (B, "B"), (C, "C")):
            s.company().add("vendors", {"id": gid, "displayName": f"Order probe {name}"})
        expected = [C, B, A] if request.param == "sql" else [A, C, B]
        yield s, expected


def test_orderby_id_filters_and_skiptoken_follow_the_id_order(three: tuple[BCSimulator, list[str]]) -> None:
    sim, expected = three
    with client(sim) as c:
        rows, responses = read_all(c, bc_url(sim, "/vendors"), 1, **{"$orderby": "id", "$select": "id,displayName"})
        ids = [r["id"] for r in rows if r["displayName"].startswith("Order probe")]
        assert ids == expected
        all_ids = [r["id"] for r in rows]
        assert all_ids == sorted(all_ids, key=sim._guid_key) and len(responses) == len(rows)
        first, middle, last = expected
        gt = c.get(bc_url(sim, "/vendors"), params={"$filter": f"id gt {middle}", "$select": "id"}).json()["value"]
        assert last in {r["id"] for r in gt} and first not in {r["id"] for r in gt}
        le = c.get(bc_url(sim, "/vendors"), params={"$filter": f"id le {middle}", "$select": "id"}).json()["value"]
        assert {first, middle} <= {r["id"] for r in le} and last not in {r["id"] for r in le}
        desc = c.get(bc_url(sim, "/vendors"), params={"$orderby": "id desc", "$select": "id"}).json()["value"]
        assert [r["id"] for r in desc] == sorted(all_ids, key=sim._guid_key, reverse=True)


def test_id_order_switches_at_run_time_through_the_control_api() -> None:
    with BCSimulator(seed=3) as sim:
        assert sim.id_order == "sql"
        for gid in (A, B, C):
            sim.company().add("vendors", {"id": gid})
        with client(sim) as c:
            def probe() -> list[str]:
                r = c.get(bc_url(sim, "/vendors"), params={"$orderby": "id", "$select": "id",
                                                          "$filter": f"id eq {A} or id eq {B} or id eq {C}"})
                return [v["id"] for v in r.json()["value"]]
            assert probe() == [C, B, A]
            assert c.post(f"{sim.base_url}/_sim/id_order", json={"order": "text"}).json() == {"idOrder": "text"}
            assert probe() == [A, C, B]


def test_generated_ids_are_sequential_in_sql_order_from_more_than_one_server_tail() -> None:
    sim = BCSimulator(seed=11)
    store = sim.company(DEMO_COMPANY_ID)
    items = store.records("items")  # number order = insertion order
    ids = [i["id"] for i in items]
    tails: dict[str, list[str]] = {}
    for gid in ids:
        tails.setdefault(gid[19:], []).append(gid)
    assert len(tails) >= 2, "a company holds ids from more than one server tail"
    for run in tails.values():
        assert run == sorted(run, key=sql_key), "each server's ids grow in SQL Server order"
    assert ids != sorted(ids), "consecutive ids are not in text order"
    same_rest = [a[2:] == b[2:] for a, b in zip(run, run[1:])]
    assert sum(same_rest) > len(same_rest) * 0.8, "the first byte changes fastest"
    again = BCSimulator(seed=11).company(DEMO_COMPANY_ID).records("items")
    assert [i["id"] for i in again] == ids
