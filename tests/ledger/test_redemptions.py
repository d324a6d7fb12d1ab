"""Redemption against a model: a hypothesis state machine drives the real command
(``Redemptions.redeem`` and ``reverse`` through a Sequencer on SQLite) with a controllable clock,
real credentials and real QR presentations, and checks every answer against a small Python
model of the rules in docs/programs.md.

The world (unions, stations, three members with credentials and wallets, seven programs) is
built once per test run on a SQLite file; each hypothesis example starts from a copy of that
file (the SQLite backup API), so an example costs what its steps cost. The presentations are
made by :class:`verifier.wallet.Wallet` and verified by
:func:`verifier.credential.verify_presentation` with the server's own trust and status lists,
as the HTTP route does; only the clock is ours.

Invariants after every step: quota usage never exceeds a quota, budget use never exceeds a
funding union's limit nor the budget, the tables (``redemptions``, ``quota_usage``,
``budget_usage``) equal the model, and every answer (success, repeat or refusal with its class
and extra members) is the one the model predicts; a refusal appends nothing. At the end of each
example the projections equal a replay of the chain, and quota and budget usage recomputed from
the chain's events alone (as an auditor would, docs/programs.md section 9) equal the tables.

PostgreSQL is not driven here (a database per example would dominate the run); the HTTP tests
(tests/api/test_redemptions_api.py) run the same command on both backends.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, select

import keys
from ledger import programs, stations, unions
from ledger import redemptions as r
from ledger import stats as ledger_stats
from ledger.credentials import Credentials, Issued
from ledger.db import make_engine
from ledger.domain import SYSTEM, Actor, Role
from ledger.identity import synthetic_id_number
from ledger.members import Members
from ledger.projections import compare, default_projections
from ledger.schema import init_schema, log_entries, log_head
from ledger.sequencer import Sequencer
from ledger.vault import PersonalData, Vault
from verifier import stats as vs
from verifier.credential import VerifiedPresentation, verify_presentation
from verifier.entry import Entry, format_entry_time, parse_entry
from verifier.wallet import Wallet

ORIGIN = "test.unionledger.localhost/ledger"
CHINA_OFFSET = timedelta(hours=8)
# Monday 2026-12-28 23:00 China time, in ISO week 2026-W53: one hour before a China day
# boundary, a week before the next ISO week/year (2027-W01) and four days before a new month.
T0 = datetime(2026, 12, 28, 15, 0, tzinfo=UTC)
SETUP = T0 - timedelta(hours=2)
DAY0 = (T0 + CHINA_OFFSET).date()  # 2026-12-28
OFFICIAL = Actor(Role.OFFICIAL, "acct-national", "100000")

PARENT = {
    "100000": None,
    "110000": "100000",
    "310000": "100000",
    "110105-0001": "110000",
    "310115-0001": "310000",
}
KINDS = {
    "100000": "national",
    "110000": "provincial",
    "310000": "provincial",
    "110105-0001": "enterprise",
    "310115-0001": "enterprise",
}
STATIONS = {  # id: (kind, operating union)
    "ST-BJ": ("union_station", "110105-0001"),
    "ST-SH": ("union_station", "310115-0001"),
    "ST-TD": ("truck_driver_home", "110000"),
}
MEMBERS = {  # name: (home union, groups)
    "rider": ("110105-0001", ["delivery_rider"]),
    "trucker": ("110000", ["truck_driver"]),
    "courier": ("310115-0001", ["courier"]),
}


def _day(offset: int) -> str:
    return (DAY0 + timedelta(days=offset)).isoformat()


def _rules(name: str, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "kind": "universal",
        "period": {"from": _day(-1), "until": _day(400)},
        "quota": {"count": 1, "per": "day"},
        "unit_value": 0,
    }
    doc.update(overrides)
    return doc


PROGRAMS: dict[str, tuple[str, dict[str, Any]]] = {  # id: (owner, rules document)
    # Two a day, 1 yuan each, up to 2 at once; 5 yuan in all, 2 of them allocated to Beijing
    # (so the rider and the trucker are funded by 110000, the courier by the owner).
    "DAY": (
        "100000",
        _rules(
            "每日饮水",
            quota={"count": 2, "per": "day"},
            unit_value=100,
            max_quantity=2,
            budget=500,
            allocations={"110000": 200},
        ),
    ),
    # Three a week at union stations only, a free service without a budget.
    "WEEK": (
        "100000",
        _rules(
            "每周休息",
            quota={"count": 3, "per": "week"},
            max_quantity=3,
            where={"station_kinds": ["union_station"]},
        ),
    ),
    # Twice a month, 10 yuan, never with PROV (declared by PROV: both directions).
    "MONTH": ("100000", _rules("每月礼包", quota={"count": 2, "per": "month"}, unit_value=1000)),
    # Beijing's once-per-program pack for ten days, 5 yuan from 7: the second Beijing member to
    # come finds the budget spent. Beijing stations only (the owner's subtree).
    "PROV": (
        "110000",
        _rules(
            "北京慰问",
            period={"from": _day(-1), "until": _day(10)},
            quota={"count": 1, "per": "program"},
            unit_value=500,
            budget=700,
            no_stack_with=["MONTH"],
        ),
    ),
    # Truck drivers only, at the one truck-driver home.
    "TRUCK": (
        "100000",
        _rules(
            "司机之家",
            kind="targeted",
            eligibility={"groups_any": ["truck_driver"]},
            where={"stations": ["ST-TD"]},
        ),
    ),
    # Members of two days' standing, once a week, from a 10-yuan budget.
    "TENURE": (
        "100000",
        _rules(
            "老会员",
            kind="targeted",
            eligibility={"min_tenure_days": 2},
            quota={"count": 1, "per": "week"},
            unit_value=200,
            budget=1000,
        ),
    ),
    # Opens in three days.
    "LATER": ("100000", _rules("迟开", period={"from": _day(3), "until": _day(400)})),
}
NO_STACK = {frozenset(("PROV", "MONTH"))}
PARSED = {pid: programs.parse_rules(doc) for pid, (_, doc) in PROGRAMS.items()}


# -- the clock and the model's own calendar ---------------------------------------------------


class Clock:
    """The sequencer's clock: ``tx.now`` is whatever the test set last."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def china_date(at: datetime) -> date:
    return (at.astimezone(UTC) + CHINA_OFFSET).date()


def china_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - CHINA_OFFSET


def model_period(per: str, at: datetime) -> str:
    day = china_date(at)
    if per == "day":
        return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    if per == "week":
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if per == "month":
        return f"{day.year:04d}-{day.month:02d}"
    return "program"


def model_renews(per: str, at: datetime) -> str | None:
    day = china_date(at)
    if per == "day":
        nxt = day + timedelta(days=1)
    elif per == "week":
        nxt = day + timedelta(days=7 - day.weekday())
    elif per == "month":
        nxt = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    else:
        return None
    return format_entry_time(china_midnight(nxt))


def within(ancestor: str, code: str | None) -> bool:
    while code is not None:
        if code == ancestor:
            return True
        code = PARENT[code]
    return False


# -- the world, built once -------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A built world on disk and the secrets that go with it (the keyring, the vault key, the
    holder keys and each member's credential as issued)."""

    db: Path
    keyring: keys.Keyring
    vault_key: bytes
    hash_key: bytes
    member_ids: dict[str, str]
    holders: dict[str, keys.PrivateKey]
    issued: dict[str, Issued]


def _issuing_keyring() -> keys.Keyring:
    ring = keys.Keyring()
    ring, _ = ring.rotate(keys.Role.ROOT, SETUP - timedelta(days=1))
    ring, _ = ring.rotate(keys.Role.ISSUER, SETUP - timedelta(days=1), scope="100000")
    return ring


def _open(db: Path, clock: Clock, keyring: keys.Keyring, vault_key: bytes, hash_key: bytes) -> Any:
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    writer = make_engine(url, writer=True)
    init_schema(engine)
    members = Members(Vault(vault_key), hash_key)
    credentials = Credentials(keyring, members)
    members.change_hooks.append(credentials.on_member_change)
    sequencer = Sequencer(writer, origin=ORIGIN, projections=default_projections(), clock=clock)
    return engine, writer, sequencer, members, credentials


def build_base(folder: Path) -> Base:
    db = folder / "base.db"
    clock = Clock(SETUP)
    ring, vault_key, hash_key = _issuing_keyring(), os.urandom(32), os.urandom(32)
    engine, writer, sequencer, members, credentials = _open(db, clock, ring, vault_key, hash_key)
    run = sequencer.execute
    try:
        for code, parent in PARENT.items():
            run(
                lambda tx, c=code, p=parent: unions.create_union(
                    tx, SYSTEM, code=c, name=f"工会{c}", kind=KINDS[c], parent=p
                )
            )
        for station, (kind, union) in STATIONS.items():
            run(
                lambda tx, s=station, k=kind, u=union: stations.register_station(
                    tx, SYSTEM, station=s, name=f"驿站{s}", kind=k, union=u
                )
            )
        rng = random.Random(7)
        member_ids, holders, issued = {}, {}, {}
        for n, (name, (union, groups)) in enumerate(MEMBERS.items()):
            person = PersonalData(
                name=f"测试{name}",
                id_number=synthetic_id_number(rng),
                phone=f"1391234{n:04d}",
            )
            row = run(
                lambda tx, u=union, p=person, g=groups: members.enrol(
                    tx, SYSTEM, union_code=u, person=p, groups=g
                )
            )
            holder = keys.PrivateKey.generate()
            member_ids[name], holders[name] = row.member_id, holder
            issued[name] = run(
                lambda tx, m=row.member_id, h=holder: credentials.issue(tx, SYSTEM, m, h.public_key)
            )
        for pid, (owner, doc) in PROGRAMS.items():  # MONTH first: PROV's no_stack_with names it
            run(
                lambda tx, i=pid, o=owner, d=doc: programs.create_program(
                    tx, SYSTEM, program=i, owner=o, rules=d
                )
            )
    finally:
        sequencer.close()
        writer.dispose()
        engine.dispose()
    return Base(db, ring, vault_key, hash_key, member_ids, holders, issued)


# -- the model -------------------------------------------------------------------------------


@dataclass
class ModelRedemption:
    index: int
    program: str
    member: str  # the test's name for the member
    station: str
    quantity: int
    value: int
    funding: str
    period: str
    at: datetime
    key: str
    verified: VerifiedPresentation
    reversed: bool = False


@dataclass
class ModelMember:
    member_id: str
    home: str
    groups: frozenset[str]
    joined: datetime
    wallet: Wallet
    credential: bytes  # SHA-256 of the current credential
    issued_at: datetime


@dataclass
class Model:
    now: datetime
    members: dict[str, ModelMember]
    closed: set[str] = field(default_factory=set)
    done: list[ModelRedemption] = field(default_factory=list)

    def quota_used(self) -> dict[tuple[str, str, str], int]:
        out: dict[tuple[str, str, str], int] = {}
        for d in self.done:
            if not d.reversed:
                k = (self.members[d.member].member_id, d.program, d.period)
                out[k] = out.get(k, 0) + d.quantity
        return out

    def budget_used(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for d in self.done:
            if not d.reversed:
                out[d.program, d.funding] = out.get((d.program, d.funding), 0) + d.value
        return out

    def funding(self, program: str, home: str) -> str:
        rules = PARSED[program]
        for union in rules.allocations:
            if within(union, home):
                return union
        return PROGRAMS[program][0]

    def limit(self, program: str, funding: str) -> int | None:
        rules = PARSED[program]
        if rules.budget is None:
            return None
        if funding in rules.allocations:
            return rules.allocations[funding]
        return rules.budget - sum(rules.allocations.values())

    def judge(
        self, member: str, program: str, station: str, quantity: int
    ) -> tuple[type[Exception], dict[str, Any]] | None:
        """The refusal the rules give (class and the extra members checked), or None."""
        owner, _ = PROGRAMS[program]
        rules = PARSED[program]
        today = china_date(self.now)
        if program in self.closed or not rules.start <= today <= rules.until:
            status = "closed" if program in self.closed else "open"
            extra = {"opens": rules.start.isoformat(), "closes": rules.until.isoformat()}
            return r.ProgramNotOpen, {**extra, "status": status}
        kind, operating = STATIONS[station]
        if not within(rules.where_subtree or owner, operating):
            return r.NotRedeemableHere, {}
        if rules.stations and station not in rules.stations:
            return r.NotRedeemableHere, {}
        if rules.station_kinds and kind not in rules.station_kinds:
            return r.NotRedeemableHere, {}
        if not 1 <= quantity <= rules.max_quantity:
            return r.BadQuantity, {}
        m = self.members[member]
        if not within(owner, m.home):
            return r.NotEligible, {}
        if rules.home_subtree is not None and not within(rules.home_subtree, m.home):
            return r.NotEligible, {}
        tenure = rules.min_tenure_days
        if tenure is not None and self.now - m.joined < timedelta(days=tenure):
            return r.NotEligible, {}
        if rules.groups_any and not m.groups & set(rules.groups_any):
            return r.NotEligible, {}
        period = model_period(rules.quota_per.value, self.now)
        used = self.quota_used().get((m.member_id, program, period), 0)
        if used + quantity > rules.quota_count:
            renews = model_renews(rules.quota_per.value, self.now)
            return r.QuotaUsed, {"used": used, "quota": rules.quota_count, "renews_at": renews}
        first = china_midnight(rules.start)
        after = china_midnight(rules.until + timedelta(days=1))
        for d in self.done:
            if (
                d.member == member
                and not d.reversed
                and frozenset((d.program, program)) in NO_STACK
                and first <= d.at < after
            ):
                return r.NotStackable, {}
        funding = self.funding(program, m.home)
        limit = self.limit(program, funding)
        if limit is not None:
            spent = self.budget_used().get((program, funding), 0)
            if spent + rules.unit_value * quantity > limit:
                return r.BudgetExhausted, {"funding_union": funding, "left": limit - spent}
        return None


# -- the state machine -------------------------------------------------------------------------

ADVANCES = [
    "1min",
    "29min",
    "30min",
    "31min",
    "5h",
    "to-next-day",
    "just-before-next-day",
    "to-next-week",
    "1day",
]


class RedemptionMachine(RuleBasedStateMachine):
    base: Base  # set by the test

    done = Bundle("done")

    def __init__(self) -> None:
        super().__init__()
        base = type(self).base
        self.folder = Path(tempfile.mkdtemp(prefix="redeem-sm-"))
        db = self.folder / "ledger.db"
        source, target = sqlite3.connect(base.db), sqlite3.connect(db)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        self.clock = Clock(T0)
        opened = _open(db, self.clock, base.keyring, base.vault_key, base.hash_key)
        self.engine: Engine = opened[0]
        self.writer: Engine = opened[1]
        self.sequencer: Sequencer = opened[2]
        self.members: Members = opened[3]
        self.credentials: Credentials = opened[4]
        self.redemptions = r.Redemptions(self.members)
        self.keys = iter(range(10**9))
        self.challenges = iter(range(10**9))
        members = {}
        for name, (home, groups) in MEMBERS.items():
            issued = base.issued[name]
            members[name] = ModelMember(
                member_id=base.member_ids[name],
                home=home,
                groups=frozenset(groups),
                joined=SETUP,  # enrolled (and joined) while the clock stood at SETUP
                wallet=Wallet(base.holders[name], issued.token, issued.disclosures),
                credential=bytes.fromhex(issued.row.credential_hash),
                issued_at=SETUP,
            )
        self.model = Model(now=T0, members=members)

    def teardown(self) -> None:
        try:
            if not hasattr(self, "sequencer"):
                return
            assert compare(self.engine, default_projections()) == []
            self._audit_from_the_chain()
        finally:
            if hasattr(self, "sequencer"):
                self.sequencer.close()
                self.writer.dispose()
                self.engine.dispose()
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def size(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(log_head.c.size)).scalar_one())

    def station_actor(self, station: str) -> Actor:
        return Actor(Role.STATION, f"dev-{station}", station)

    def renew_if_old(self, name: str) -> None:
        m = self.model.members[name]
        if self.model.now - m.issued_at > timedelta(days=20):
            self.reissue(name)

    def reissue(self, name: str) -> None:
        m = self.model.members[name]
        issued = self.sequencer.execute(
            lambda tx: self.credentials.reissue(tx, SYSTEM, m.member_id, "renewed")
        )
        assert issued is not None
        m.wallet = Wallet(m.wallet._holder_key, issued.token, issued.disclosures)
        m.credential = bytes.fromhex(issued.row.credential_hash)
        m.issued_at = self.model.now

    def present(self, name: str) -> VerifiedPresentation:
        """A fresh QR code from the member's wallet, verified as the HTTP route does."""
        m = self.model.members[name]
        now = self.model.now
        challenge = next(self.challenges).to_bytes(4, "big")
        text = m.wallet.presentation([], now, challenge)
        with self.engine.connect() as conn:
            trust, lists = self.credentials.verification_material(
                conn, lambda issuer: f"https://status.test/{issuer}", now
            )
        verified = verify_presentation(
            text, trust_list=trust, status_lists=lists, now=now, challenge=challenge
        )
        assert verified.member_id == m.member_id
        assert verified.credential_hash == m.credential
        return verified

    def attempt(
        self, verified: VerifiedPresentation, station: str, program: str, quantity: int, key: str
    ) -> r.Redeemed | r.Refused:
        """Run the command; a refusal is returned (it must be a Refused), nothing else."""
        before = self.size()
        try:
            return self.sequencer.execute(
                lambda tx: self.redemptions.redeem(
                    tx,
                    self.station_actor(station),
                    verified,
                    program=program,
                    quantity=quantity,
                    key=key,
                )
            )
        except r.Refused as refused:
            assert self.size() == before, "a refusal appended something"
            return refused

    def expect_refusal(
        self, outcome: object, cls: type[Exception], extra: dict[str, Any] | None = None
    ) -> None:
        assert type(outcome) is cls, (outcome, cls)
        assert isinstance(outcome, r.Refused)
        for k, v in (extra or {}).items():
            assert outcome.extra.get(k) == v, (k, outcome.extra, extra)

    def check_row(self, row: r.RedemptionRow, d: ModelRedemption) -> None:
        m = self.model.members[d.member]
        assert row.redemption == d.index
        assert (row.program_id, row.version, row.member_id) == (d.program, 1, m.member_id)
        assert (row.station_id, row.quantity, row.value) == (d.station, d.quantity, d.value)
        assert (row.funding_union, row.operating_union) == (d.funding, STATIONS[d.station][1])
        assert (row.home_union, row.period, row.at) == (m.home, d.period, format_entry_time(d.at))
        assert row.presentation == d.verified.presentation_hash.hex()
        assert (row.reversed_at is not None) == d.reversed

    # -- rules -----------------------------------------------------------------------------

    def _redeem(
        self, member: str, program: str, station: str, quantity: int, key: str | None = None
    ) -> Any:
        """A fresh QR code of ``member`` scanned at ``station``: the model's answer or a
        redemption (added to the bundle)."""
        self.renew_if_old(member)
        verified = self.present(member)
        key = key or f"key-{next(self.keys)}"
        predicted = self.model.judge(member, program, station, quantity)
        before = self.size()
        outcome = self.attempt(verified, station, program, quantity, key)
        if predicted is not None:
            self.expect_refusal(outcome, *predicted)
            return multiple()
        assert isinstance(outcome, r.Redeemed), outcome
        assert not outcome.repeated
        m = self.model.members[member]
        rules = PARSED[program]
        d = ModelRedemption(
            index=outcome.row.redemption,
            program=program,
            member=member,
            station=station,
            quantity=quantity,
            value=rules.unit_value * quantity,
            funding=self.model.funding(program, m.home),
            period=model_period(rules.quota_per.value, self.model.now),
            at=self.model.now,
            key=key,
            verified=verified,
        )
        assert d.index == before  # the one entry appended
        assert self.size() == before + 1
        self.model.done.append(d)
        self.check_row(outcome.row, d)
        used = self.model.quota_used()[m.member_id, program, d.period]
        assert outcome.remaining == rules.quota_count - used
        assert outcome.renews_at == model_renews(rules.quota_per.value, self.model.now)
        assert outcome.program_name == rules.name
        return d

    @rule(
        target=done,
        member=st.sampled_from(sorted(MEMBERS)),
        program=st.sampled_from(sorted(PROGRAMS)),
        station=st.sampled_from(sorted(STATIONS)),
        quantity=st.sampled_from([1, 1, 1, 2, 3, 0]),
        race=st.sampled_from([False] * 5 + [True]),
    )
    def redeem(self, member: str, program: str, station: str, quantity: int, race: bool) -> Any:
        """Any member, program, station and quantity. With ``race``, the QR code is verified
        and then the credential re-issued before the command runs: the authoritative online
        check (step 2) refuses it."""
        if not race:
            return self._redeem(member, program, station, quantity)
        self.renew_if_old(member)
        verified = self.present(member)
        self.reissue(member)
        outcome = self.attempt(verified, station, program, 1, f"key-{next(self.keys)}")
        self.expect_refusal(outcome, r.CredentialRevoked)
        return multiple()

    @rule(
        target=done,
        member=st.sampled_from(sorted(MEMBERS)),
        program=st.sampled_from(sorted(PROGRAMS)),
        pick=st.integers(0, 2),
        quantity=st.sampled_from([1, 1, 2]),
    )
    def redeem_where_allowed(self, member: str, program: str, pick: int, quantity: int) -> Any:
        """At a station that may redeem the program: drives quota, stacking and budget."""
        allowed = [
            s
            for s in sorted(STATIONS)
            if self.model.judge(member, program, s, 1) not in ((r.NotRedeemableHere, {}),)
        ]
        station = allowed[pick % len(allowed)] if allowed else "ST-BJ"
        return self._redeem(member, program, station, min(quantity, PARSED[program].max_quantity))

    @rule(
        target=done,
        d=done,
        how=st.sampled_from(
            [
                "same",
                "other-program",
                "other-quantity",
                "other-qr",
                "replay-here",
                "replay-elsewhere",
                "key-at-another-station",
            ]
        ),
    )
    def retry(self, d: ModelRedemption, how: str) -> Any:
        """A station retries a request (the same answer again), reuses its key for another
        one (``idempotency-conflict``), a used QR code comes back with a new key
        (``presentation-replayed``, at any station), or another station happens to use the
        same key (keys are per station: judged as new)."""
        before = self.size()
        if how == "same":
            outcome = self.attempt(d.verified, d.station, d.program, d.quantity, d.key)
            assert isinstance(outcome, r.Redeemed), outcome
            assert outcome.repeated
            self.check_row(outcome.row, d)
            assert self.size() == before
        elif how.startswith("other-"):
            program, quantity, verified = d.program, d.quantity, d.verified
            if how == "other-program":
                program = "WEEK" if program != "WEEK" else "DAY"
            elif how == "other-quantity":
                quantity += 1
            else:
                verified = verified._replace(presentation_hash=bytes(32))
            outcome = self.attempt(verified, d.station, program, quantity, d.key)
            self.expect_refusal(outcome, r.IdempotencyConflict)
        elif how.startswith("replay-"):
            station = d.station if how == "replay-here" else sorted(set(STATIONS) - {d.station})[0]
            outcome = self.attempt(d.verified, station, d.program, d.quantity, "k-replay")
            self.expect_refusal(outcome, r.PresentationReplayed)
        else:
            station = sorted(set(STATIONS) - {d.station})[d.index % 2]
            used = {(x.station, x.key) for x in self.model.done}
            if (station, d.key) not in used:
                return self._redeem(d.member, d.program, station, d.quantity, d.key)
        return multiple()

    @rule(
        d=done,
        by=st.sampled_from(
            [
                *sorted(STATIONS),
                "official",
                "official-with-reason",
                "official-empty-reason",
                "official-blank-reason",
            ]
        ),
    )
    def reverse(self, d: ModelRedemption, by: str) -> None:
        """The redeeming station within the window; an official, after it with a reason."""
        expected: type[Exception] | None = None
        if by in STATIONS:
            actor, reason = self.station_actor(by), None
            if by != d.station:
                expected = r.UnknownRedemption
            elif d.reversed:
                expected = r.AlreadyReversed
            elif self.model.now - d.at > r.REVERSAL_WINDOW:
                expected = r.ReversalWindowClosed
        else:
            actor = OFFICIAL
            reason = {
                "official": None,
                "official-empty-reason": "",
                "official-blank-reason": " \t ",  # blank is no reason
            }.get(by, "wrong member")
            if d.reversed:
                expected = r.AlreadyReversed
            elif self.model.now - d.at > r.REVERSAL_WINDOW and not (reason or "").strip():
                expected = r.ReversalWindowClosed
        self._reverse(d, actor, reason, expected)

    def _reverse(
        self, d: ModelRedemption, actor: Actor, reason: str | None, expected: type[Exception] | None
    ) -> None:
        before = self.size()
        outcome: Any
        try:
            outcome = self.sequencer.execute(
                lambda tx: self.redemptions.reverse(tx, actor, d.index, reason=reason)
            )
        except (r.UnknownRedemption, r.AlreadyReversed, r.ReversalWindowClosed) as refused:
            outcome = refused
        if expected is not None:
            assert type(outcome) is expected, (outcome, expected)
            assert self.size() == before
            return
        entry = outcome
        assert isinstance(entry, Entry), f"not refused: {entry!r}"
        assert entry.type == "RedemptionReversed"
        assert entry.body == {
            "redemption": d.index,
            "program": d.program,
            "member": self.model.members[d.member].member_id,
            "reason": (reason or "").strip() or None,  # a blank reason is written as none
        }
        d.reversed = True

    @precondition(lambda self: len(self.model.closed) < 2)
    @rule(program=st.sampled_from(["LATER", "MONTH", "TRUCK"]))
    def close_program(self, program: str) -> None:
        if program in self.model.closed:
            with pytest.raises(programs.ProgramClosed):
                self.sequencer.execute(
                    lambda tx: programs.close_program(tx, SYSTEM, program=program)
                )
            return
        self.sequencer.execute(lambda tx: programs.close_program(tx, SYSTEM, program=program))
        self.model.closed.add(program)

    @rule(step=st.sampled_from(ADVANCES))
    def advance_the_clock(self, step: str) -> None:
        now = self.model.now
        today = china_date(now)
        if step.endswith("min"):
            now += timedelta(minutes=int(step[:-3]))
        elif step == "5h":
            now += timedelta(hours=5)
        elif step == "1day":
            now += timedelta(days=1)
        elif step == "to-next-day":
            now = china_midnight(today + timedelta(days=1))
        elif step == "just-before-next-day":
            now = china_midnight(today + timedelta(days=1)) - timedelta(microseconds=1)
            if now <= self.model.now:  # already there: the end of the day after
                now = china_midnight(today + timedelta(days=2)) - timedelta(microseconds=1)
        else:
            now = china_midnight(today + timedelta(days=7 - today.weekday()))
        assert now > self.model.now
        self.model.now = now
        self.clock.now = now

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def tables_agree_with_the_model_and_the_limits(self) -> None:
        with self.engine.connect() as conn:
            quota = {
                (row.member_id, row.program_id, row.period): row.used
                for row in conn.execute(select(r.quota_usage))
            }
            budget = {
                (row.program_id, row.funding_union): int(row.used)
                for row in conn.execute(select(r.budget_usage))
            }
            rows = {row.redemption: r._row(row) for row in conn.execute(select(r.redemptions))}
        assert all(v >= 0 for v in quota.values())
        assert all(v >= 0 for v in budget.values())
        for (_, program, _), used in quota.items():
            assert used <= PARSED[program].quota_count
        totals: dict[str, int] = {}
        for (program, funding), used in budget.items():
            limit = self.model.limit(program, funding)
            assert limit is None or used <= limit
            totals[program] = totals.get(program, 0) + used
        for program, total in totals.items():
            budget_of = PARSED[program].budget
            assert budget_of is None or total <= budget_of
        assert {k: v for k, v in quota.items() if v} == self.model.quota_used()
        assert {k: v for k, v in budget.items() if v} == {
            k: v for k, v in self.model.budget_used().items() if v
        }
        assert sorted(rows) == [d.index for d in self.model.done]
        for d in self.model.done:
            self.check_row(rows[d.index], d)

    # -- the end ---------------------------------------------------------------------------

    def _audit_from_the_chain(self) -> None:
        """Quota and budget usage recomputed from the events alone (docs/programs.md)."""
        with self.engine.connect() as conn:
            entries = [
                parse_entry(bytes(d)) for d in conn.execute(select(log_entries.c.data)).scalars()
            ]
            quota_rows = {
                (row.member_id, row.program_id, row.period): row.used
                for row in conn.execute(select(r.quota_usage))
            }
            budget_rows = {
                (row.program_id, row.funding_union): int(row.used)
                for row in conn.execute(select(r.budget_usage))
            }
        recorded: dict[int, dict[str, Any]] = {}
        quota: dict[tuple[str, str, str], int] = {}
        budget: dict[tuple[str, str], int] = {}
        for e in sorted(entries, key=lambda e: e.index):
            if e.type == "RedemptionRecorded":
                recorded[e.index] = e.body
                sign, body = 1, e.body
            elif e.type == "RedemptionReversed":
                sign, body = -1, recorded.pop(e.body["redemption"])
            else:
                continue
            q = (body["member"], body["program"], body["period"])
            quota[q] = quota.get(q, 0) + sign * body["quantity"]
            b = (body["program"], body["funding"])
            budget[b] = budget.get(b, 0) + sign * body["value"]
        assert quota == quota_rows
        assert budget == budget_rows
        # The statistics (docs/stats.md): the projection equals the auditor's fold of the
        # chain, and every union's subtree cell is its own plus its children's subtrees.
        recomputed = vs.Recompute().take_all(sorted(entries, key=lambda e: e.index)).figures()
        published = ledger_stats.export(self.engine).value
        assert vs.compare(published, recomputed) == []
        cells = published.cells
        zero = (0,) * vs.N
        assert bool(cells) == any(e.type == "RedemptionRecorded" for e in entries)
        for code in PARENT:
            children = [c for c, p in PARENT.items() if p == code]
            for scope, program, day in [k for k in cells if k[0] == f"U:{code}"]:
                parts = [cells.get((f"O:{code}", program, day), zero)] + [
                    cells.get((f"U:{c}", program, day), zero) for c in children
                ]
                summed = tuple(sum(x) for x in zip(*parts, strict=True))
                assert cells[(scope, program, day)] == summed, (scope, program, day)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return build_base(tmp_path_factory.mktemp("redemption-base"))


def test_redemption_rules_hold_for_any_sequence_of_scans_reversals_and_time(base: Base) -> None:
    RedemptionMachine.base = base
    run_state_machine_as_test(
        RedemptionMachine, settings=settings(max_examples=60, stateful_step_count=50)
    )


# -- the same world, scripted: the boundaries the machine may or may not reach --------------------


@pytest.fixture
def machine(base: Base) -> Iterator[RedemptionMachine]:
    RedemptionMachine.base = base
    m = RedemptionMachine()
    try:
        yield m
    finally:
        m.teardown()


def _go(m: RedemptionMachine, member: str, program: str, station: str, quantity: int = 1) -> Any:
    """Redeem through the machine (which checks the model's prediction), and return the real
    answer: the ModelRedemption, or the refusal."""
    m.renew_if_old(member)
    verified = m.present(member)
    predicted = m.model.judge(member, program, station, quantity)
    if predicted is not None:
        outcome = m.attempt(verified, station, program, quantity, f"key-{next(m.keys)}")
        m.expect_refusal(outcome, *predicted)
        return outcome
    done = m._redeem(member, program, station, quantity)
    m.tables_agree_with_the_model_and_the_limits()
    return done


def _set_clock(m: RedemptionMachine, when: datetime) -> None:
    assert when > m.model.now
    m.model.now = m.clock.now = when


def test_a_daily_quota_renews_at_china_midnight(machine: RedemptionMachine) -> None:
    m = machine
    assert isinstance(_go(m, "courier", "DAY", "ST-SH", 2), ModelRedemption)  # 23:00 in China
    refused = _go(m, "courier", "DAY", "ST-SH")
    assert type(refused) is r.QuotaUsed
    assert refused.extra == {"used": 2, "quota": 2, "renews_at": "2026-12-28T16:00:00.000000Z"}
    _set_clock(m, datetime(2026, 12, 28, 15, 59, 59, 999999, tzinfo=UTC))
    assert type(_go(m, "courier", "DAY", "ST-SH")) is r.QuotaUsed
    _set_clock(m, datetime(2026, 12, 28, 16, 0, tzinfo=UTC))  # 00:00 China time, 16:00 UTC
    assert _go(m, "courier", "DAY", "ST-SH").period == "2026-12-29"


def test_a_weekly_quota_follows_iso_weeks_across_the_new_year(machine: RedemptionMachine) -> None:
    m = machine
    assert _go(m, "courier", "WEEK", "ST-SH", 3).period == "2026-W53"
    refused = _go(m, "courier", "WEEK", "ST-SH")
    assert type(refused) is r.QuotaUsed
    assert refused.extra["renews_at"] == "2027-01-03T16:00:00.000000Z"  # Monday 2027-01-04
    _set_clock(m, datetime(2026, 12, 31, 16, 30, tzinfo=UTC))  # 2027-01-01, still 2026-W53
    assert type(_go(m, "courier", "WEEK", "ST-SH")) is r.QuotaUsed
    _set_clock(m, datetime(2027, 1, 3, 16, 0, tzinfo=UTC))
    assert _go(m, "courier", "WEEK", "ST-SH").period == "2027-W01"


def test_stacking_refuses_both_ways_until_reversed(machine: RedemptionMachine) -> None:
    m = machine
    month = _go(m, "rider", "MONTH", "ST-BJ")
    assert type(_go(m, "rider", "PROV", "ST-BJ")) is r.NotStackable
    m.reverse(month, "ST-BJ")
    prov = _go(m, "rider", "PROV", "ST-BJ")
    assert isinstance(prov, ModelRedemption)
    assert type(_go(m, "rider", "MONTH", "ST-TD")) is r.NotStackable  # judged in MONTH's period
    assert isinstance(_go(m, "trucker", "MONTH", "ST-TD"), ModelRedemption)  # another member


def test_allocations_fund_their_subtree_and_run_out_alone(machine: RedemptionMachine) -> None:
    m = machine
    assert _go(m, "rider", "DAY", "ST-BJ", 2).funding == "110000"  # 200 of its 200
    refused = _go(m, "trucker", "DAY", "ST-TD")
    assert type(refused) is r.BudgetExhausted
    assert refused.extra == {"funding_union": "110000", "left": 0}
    assert _go(m, "courier", "DAY", "ST-SH", 2).funding == "100000"  # the owner's 300 remain


def test_what_a_removed_allocation_spent_counts_against_the_owner(
    machine: RedemptionMachine,
) -> None:
    """A revision that drops an allocation leaves its spending on the owner's unallocated part:
    the redemption check counts it (docs/programs.md section 7), and so do the statistics'
    budgets (``ledger.stats.budgets_funded``)."""
    m = machine
    assert _go(m, "rider", "DAY", "ST-BJ", 2).funding == "110000"  # 200 of its 200
    owner, rules = PROGRAMS["DAY"]
    m.sequencer.execute(
        lambda tx: programs.revise_program(
            tx, SYSTEM, program="DAY", rules={**rules, "allocations": {}}
        )
    )

    def budgets(union: str) -> dict[str, dict[str, int]]:
        with m.engine.connect() as conn:
            return {b["program"]: b for b in ledger_stats.budgets_funded(conn, union)}

    assert budgets(owner)["DAY"] == {"program": "DAY", "allocated": 500, "used": 200, "left": 300}
    assert "DAY" not in budgets("110000")  # it funds nothing of DAY any more
    done = m.attempt(m.present("courier"), "ST-SH", "DAY", 2, "after-revision-1")
    assert isinstance(done, r.Redeemed)
    assert done.row.funding_union == owner
    assert budgets(owner)["DAY"]["left"] == 100
    refused = m.attempt(m.present("trucker"), "ST-TD", "DAY", 2, "after-revision-2")
    assert type(refused) is r.BudgetExhausted  # the check and the figures agree: 100 left
    assert refused.extra == {"funding_union": owner, "left": 100}


def test_the_reversal_window_is_thirty_minutes(machine: RedemptionMachine) -> None:
    m = machine
    first = _go(m, "courier", "WEEK", "ST-SH")
    second = _go(m, "courier", "WEEK", "ST-SH")
    _set_clock(m, T0 + r.REVERSAL_WINDOW)  # exactly 30 minutes: still inside
    m.reverse(first, "ST-SH")
    assert first.reversed
    _set_clock(m, T0 + r.REVERSAL_WINDOW + timedelta(microseconds=1))
    m.reverse(second, "ST-SH")  # the station may not any more
    m.reverse(second, "official")  # nor an official without a reason
    m.reverse(second, "official-blank-reason")  # nor with a blank one
    assert not second.reversed
    m.reverse(second, "official-with-reason")
    assert second.reversed


@pytest.mark.parametrize("change", ["program", "station"])
def test_a_change_in_the_same_batch_is_seen_by_the_next_redemption(
    machine: RedemptionMachine, change: str
) -> None:
    """The writer remembers programs, versions, stations and the union tree for a batch
    (``Tx.memoised``): a close appended between two redemptions of one batch must be seen by
    the second. One command runs all three in one transaction (one batch), so the second
    redemption reads after the first has filled the memo."""
    m = machine
    first, second = m.present("rider"), m.present("trucker")
    station = m.station_actor("ST-TD")

    def command(tx: Any) -> None:
        m.redemptions.redeem(tx, station, first, program="MONTH", quantity=1, key="memo-1")
        if change == "program":
            programs.close_program(tx, SYSTEM, program="MONTH")
        else:
            stations.close_station(tx, SYSTEM, station="ST-TD")
        m.redemptions.redeem(tx, station, second, program="MONTH", quantity=1, key="memo-2")

    before = m.size()
    expected = r.ProgramNotOpen if change == "program" else r.NotRedeemableHere
    with pytest.raises(expected):
        m.sequencer.execute(command)
    assert m.size() == before  # the command wrote, then failed: the whole batch rolled back
    # And a batch's memo does not outlive it: the next batch reads the tables afresh.
    assert isinstance(_go(m, "trucker", "MONTH", "ST-TD"), ModelRedemption)


def test_a_change_by_another_writer_between_batches_is_seen(machine: RedemptionMachine) -> None:
    """The memo outlives a batch only while no other writer appends an event that may change
    what it holds (anything but redemption and credential events, counted by the event counts
    projection): a second sequencer on the same file (another server process) closes the
    program between two batches of the first; the first's next batch must read afresh."""
    m = machine
    assert isinstance(_go(m, "rider", "MONTH", "ST-BJ"), ModelRedemption)  # memo filled
    base = type(m).base
    _, other_writer, other, _, _ = _open(
        m.folder / "ledger.db", m.clock, base.keyring, base.vault_key, base.hash_key
    )
    try:
        other.execute(lambda tx: programs.close_program(tx, SYSTEM, program="MONTH"))
    finally:
        other.close()
        other_writer.dispose()
    refused = m.attempt(m.present("trucker"), "ST-TD", "MONTH", 1, "after-close")
    assert type(refused) is r.ProgramNotOpen
    # Without another writer, the memo is kept across batches and still right.
    assert type(m.attempt(m.present("courier"), "ST-SH", "MONTH", 1, "again")) is r.ProgramNotOpen
