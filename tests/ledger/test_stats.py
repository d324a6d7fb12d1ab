"""The statistics projection against the auditor's fold (docs/stats.md), property-based.

Hypothesis writes random histories of raw events (unions created and moved, members enrolled
with groups, group spans opened and closed around today, redemptions online and offline,
reversals (also of unknown or already reversed redemptions), offline conflicts and refused
records) and appends them through a real Sequencer in batches of random sizes, so that the
projection's per-batch memory (union chains, group spans, pending cells, distinct members) is
exercised across batch boundaries, and with a second writer on the same file appending
every third batch. After each history: the figures the server publishes equal
``verifier.stats.Recompute`` over the chain, and a rebuild reproduces the tables.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from keys import PrivateKey
from ledger import stats as ls
from ledger.projections import compare, default_projections
from ledger.sequencer import Event
from tests.ledger.conftest import open_ledger
from verifier import stats as vs
from verifier.entry import parse_entry

UNIONS = ["P1", "P2", "C1", "C2", "G1", "G2", "G3"]
KINDS = {"P1": "provincial", "P2": "provincial", "C1": "city", "C2": "city"}
MEMBERS = ["m0", "m1", "m2", "m3"]
GROUPS = ["delivery_rider", "courier", "truck_driver"]
STATIONS = ["S1", "S2"]
PROGRAMS = ["PA", "PB"]
TODAY = datetime.now(vs.CHINA).date()  # the China day: statistics count by it
DAYS = [(TODAY + timedelta(days=d)).isoformat() for d in (-2, -1, 0, 1)]


def _digest(*parts: object) -> str:
    raw = hashlib.sha256(repr(parts).encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class History:
    """Builds valid-looking event bodies; keeps what later events may name."""

    def __init__(self) -> None:
        self.n = 0
        self.redemptions: list[int] = []
        self.homed = False  # a redemption of a member whose home union exists
        # What the commands would refuse is not generated (the projections assume it):
        self.enrolled: set[str] = set()
        self.open: set[tuple[str, str]] = set()  # (member, group) with an open span
        self.starts: set[tuple[str, str, str]] = set()  # spans' keys used

    def tree(self) -> list[Event]:
        out = [self._union("100000", "national", None)]
        parents = {"P1": "100000", "P2": "100000", "C1": "P1", "C2": "P2"}
        for code, parent in parents.items():
            out.append(self._union(code, KINDS[code], parent))
        for code, parent in (("G1", "C1"), ("G2", "C2"), ("G3", "P1")):
            out.append(self._union(code, "enterprise", parent))
        return out

    def _union(self, code: str, kind: str, parent: str | None) -> Event:
        body = {
            "code": code,
            "name": f"工会{code}",
            "kind": kind,
            "parent": parent,
            "join_code": f"{len(code)}{code:0>9}"[:10].replace("G", "0").replace("P", "1"),
            "auto_approve": False,
        }
        return Event("UnionCreated", "system", body)

    def event(self, op: tuple[Any, ...]) -> Event | None:
        self.n += 1
        kind = op[0]
        if kind == "enrol":
            _, member, union, groups = op
            if member in self.enrolled:
                return None
            self.enrolled.add(member)
            start = datetime.now(UTC).date().isoformat()
            for g in set(groups):
                self.open.add((member, g))
                self.starts.add((member, g, start))
            body = {
                "member": member,
                "union": union,
                "id_hash": hashlib.sha256(member.encode()).hexdigest(),
                "groups": sorted(set(groups)),
                "sealed": "AA",
            }
            return Event("MemberEnrolled", "system", body)
        if kind == "group":
            _, member, group, day, ended = op
            if member not in self.enrolled:
                return None
            if ended != ((member, group) in self.open) or (
                not ended and (member, group, day) in self.starts
            ):
                return None
            if ended:
                self.open.discard((member, group))
                body = {"member": member, "group": group, "until": day}
                return Event("MemberGroupEnded", "system", body)
            self.open.add((member, group))
            self.starts.add((member, group, day))
            return Event(
                "MemberGroupAdded", "system", {"member": member, "group": group, "from": day}
            )
        if kind == "move":
            _, code, parent = op
            return Event("UnionMoved", "system", {"code": code, "parent": parent})
        if kind in ("redeem", "offline", "conflict"):
            _, member, home, station, program, value, quantity = op
            self.homed = self.homed or home != "NOWHERE"
            body: dict[str, Any] = {
                "program": program,
                "version": 1,
                "member": member,
                "station": station,
                "quantity": quantity,
                "value": value * quantity,
                "operating": "G2" if station == "S2" else "G1",
                "home": home,
                "presentation": _digest(self.n, "p"),
            }
            offline = {
                "seq": self.n,
                "kid": _digest(station),
                "record": _digest(self.n, "r"),
                "offline_at": int(datetime.now(UTC).timestamp()) - 3600 * (self.n % 30),
            }
            if kind == "conflict":
                body.update(offline, reason="quota-used", message="the quota was used")
                return Event("OfflineRedemptionConflicted", f"station:{station}", body)
            body.update(funding="100000" if program == "PA" else "P1", period="program")
            if kind == "offline":
                body.update(offline, idempotency=f"offline:{offline['kid']}:{self.n}")
                return Event("OfflineRedemptionRecorded", f"station:{station}", body)
            body["idempotency"] = f"k{self.n}"
            return Event("RedemptionRecorded", f"station:{station}", body)
        if kind == "reverse":
            _, which = op
            target = self.redemptions[which % len(self.redemptions)] if self.redemptions else 999
            body = {"redemption": target, "program": "PA", "member": "m0", "reason": None}
            return Event("RedemptionReversed", "system", body)
        if kind == "refused":
            _, station = op
            body = {
                "station": station,
                "kid": None,
                "seq": None,
                "record": _digest(self.n, "x"),
                "reason": "record-bad-signature",
                "message": "bad signature",
            }
            return Event("OfflineRecordRefused", f"station:{station}", body)
        return None


member = st.sampled_from(MEMBERS)
ops = st.one_of(
    st.tuples(
        st.just("enrol"),
        member,
        st.sampled_from(["G1", "G2", "G3", "C1"]),
        st.lists(st.sampled_from(GROUPS), max_size=2),
    ),
    st.tuples(
        st.just("group"), member, st.sampled_from(GROUPS), st.sampled_from(DAYS), st.booleans()
    ),
    st.tuples(
        st.just("move"), st.sampled_from(["G1", "G2", "G3", "C1", "C2"]), st.sampled_from(UNIONS)
    ),
    st.tuples(
        st.sampled_from(["redeem", "redeem", "offline", "conflict"]),
        member,
        st.sampled_from(["G1", "G2", "G3", "C1", "NOWHERE"]),
        st.sampled_from(STATIONS),
        st.sampled_from(PROGRAMS),
        st.sampled_from([0, 500]),
        st.integers(1, 3),
    ),
    st.tuples(st.just("reverse"), st.integers(0, 50)),
    st.tuples(st.just("refused"), st.sampled_from(STATIONS)),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=st.lists(ops, min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=40),
)
def test_the_projection_equals_the_fold_of_the_chain(
    tmp_path_factory: Any, history: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    folder: Path = tmp_path_factory.mktemp("stats")
    key = PrivateKey.generate()
    ledger = open_ledger(f"sqlite:///{folder / 'l.db'}", key)
    # A second writer on the same file (another server process), appending every third
    # batch: what the first keeps across its batches (union chains, group spans) must not
    # outlive a change the other appended.
    other = open_ledger(f"sqlite:///{folder / 'l.db'}", key)
    try:
        h = History()
        ledger.sequencer.append(h.tree())
        i, c = 0, 0
        while i < len(history):  # events made batch by batch: reversals name earlier ones
            chunk = history[i : i + cuts[c % len(cuts)]]
            batch = [e for e in (h.event(op) for op in chunk) if e is not None]
            appended = (other if c % 3 == 2 else ledger).sequencer.append(batch)
            h.redemptions += [
                e.index
                for e in appended
                if e.type in ("RedemptionRecorded", "OfflineRedemptionRecorded")
            ]
            i, c = i + len(chunk), c + 1
        chain = [parse_entry(d) for d in ledger.reader.entries(0, ledger.reader.size())]
        published = ls.export(ledger.engine).value
        recomputed = vs.Recompute().take_all(chain).figures()
        assert vs.compare(published, recomputed) == []
        if h.redemptions:  # something was counted: at the station, and under the tree
            assert any(k[0].startswith("S:") for k in published.cells)
        if h.homed:
            assert any(k[0] == "U:100000" for k in published.cells)
        assert compare(ledger.engine, default_projections()) == []
        # The monthly roll-up is the sum of the day cells of U:, O: and S: scopes
        months: dict[tuple[str, str, str], list[int]] = {}
        for (scope, program, period), counts in published.cells.items():
            if len(period) == 10:
                acc = months.setdefault((scope, program, period[:7]), [0] * vs.N)
                acc[:] = [a + b for a, b in zip(acc, counts, strict=True)]
        with ledger.engine.connect() as conn:
            c = ls.stats_months.c
            stored = {
                (r[0], r[1], r[2]): list(r[3:])
                for r in conn.execute(
                    select(c.scope, c.program, c.period, *(c[f] for f in vs.FIELDS))
                )
            }
        assert stored == months
    finally:
        for opened in (ledger, other):
            opened.sequencer.close()
            opened.writer.dispose()
            opened.engine.dispose()


def test_a_change_by_another_writer_reaches_the_next_batch_figures(tmp_path: Path) -> None:
    """The first writer keeps union chains and group spans across its batches; a group span
    and a union move appended by a second writer on the same file (another server process)
    between two of its batches must count in its next redemption's figures."""
    key = PrivateKey.generate()
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first, second = open_ledger(url, key), open_ledger(url, key)
    h = History()
    redeem = ("redeem", "m0", "G1", "S1", "PA", 0, 1)

    def append(ledger: Any, *ops: tuple[Any, ...]) -> None:
        ledger.sequencer.append([e for e in (h.event(op) for op in ops) if e is not None])

    try:
        first.sequencer.append(h.tree())
        append(first, ("enrol", "m0", "G1", []), redeem)  # m0's spans and G1's chain read
        append(second, ("group", "m0", "courier", DAYS[0], False), ("move", "G1", "P2"))
        append(first, redeem)
        published = ls.export(first.engine).value
        chain = [parse_entry(d) for d in first.reader.entries(0, first.reader.size())]
        assert vs.compare(published, vs.Recompute().take_all(chain).figures()) == []
        today = TODAY.isoformat()
        assert published.cells[("G:P2:courier", "PA", today[:7])][vs.REDEMPTIONS] == 1
        assert published.cells[("U:P2", "PA", today)][vs.REDEMPTIONS] == 1
        assert published.cells[("U:P1", "PA", today)][vs.REDEMPTIONS] == 1  # the first one
        assert compare(first.engine, default_projections()) == []
    finally:
        for opened in (first, second):
            opened.sequencer.close()
            opened.writer.dispose()
            opened.engine.dispose()


@given(
    start=st.dates(min_value=date(2024, 1, 1), max_value=date(2027, 12, 31)),
    length=st.integers(0, 800),
)
def test_a_range_splits_into_edge_days_and_whole_months(start: date, length: int) -> None:
    end = start + timedelta(days=length)
    days, months = ls.split_range(start.isoformat(), end.isoformat())
    covered: set[date] = set()
    for a, z in days:
        d = date.fromisoformat(a)
        while d <= date.fromisoformat(z):
            covered.add(d)
            d += timedelta(days=1)
    assert len(days) <= 2
    if months is not None:
        d = date.fromisoformat(months[0] + "-01")
        assert d.day == 1
        while d.isoformat()[:7] <= months[1]:
            assert d not in covered  # nothing counted twice
            covered.add(d)
            d += timedelta(days=1)
    want = {start + timedelta(days=i) for i in range(length + 1)}
    assert covered == want
