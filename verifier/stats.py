"""Statistics of redemptions: the figures as a pure fold over ledger entries (docs/stats.md).

The server keeps these figures as projections (``ledger/stats.py``), updated in the
transaction of each event; an auditor recomputes them from the verified chain alone with
:class:`Recompute` and compares (:func:`compare`). Both use :func:`effect`, which turns one
entry into what it adds to the figures, given a :class:`Context` (the union tree, the member's
groups and the redemption a reversal names, as the chain stood just before the entry): the
server answers the context from its tables, the auditor from the entries it has folded.

Figures live in *cells* keyed ``(scope, program, period)``:

- scope ``U:<code>``: the subtree of a union: redemptions of members whose home union was
  that union or below it when the event was appended (as posted: a later move of a union
  does not move figures already posted); per day;
- scope ``O:<code>``: the union's own members only (home union exactly); per day;
- scope ``S:<station>``: one station; per day (``program`` is ``""`` for refused records);
- scope ``G:<code>:<group>``: members of a union's subtree in a (non-sensitive) group on the
  day of the redemption; per month;
- scope ``P:<funding>><operating>``: what the funding union owes the operating union of the
  station; per month.

Periods are China dates (UTC+8): ``YYYY-MM-DD`` days and ``YYYY-MM`` months. Distinct members
served are counted per month and per year (``YYYY``), for ``U`` and ``S`` scopes, per program
and over all programs (program ``*``): a member counts once per home union (one who changed
union within a period counts in both unions' chains).

Nothing here imports the server, a database or a web framework.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta, timezone
from typing import Any, Protocol

from verifier.audit import LogSource, audit
from verifier.entry import Entry, parse_entry, parse_entry_time
from verifier.merkle import CompactRange, leaf_hash
from verifier.note import NoteVerifier

FORMAT = "unionledger-stats/1"
CHINA = timezone(timedelta(hours=8), "CST")

FIELDS = (
    "redemptions",  # redemptions posted (online and offline), reversed or not
    "quantity",  # units handed out
    "value",  # fen
    "offline",  # of the redemptions, how many were offline records accepted at sync
    "offline_value",
    "reversals",  # reversals posted (on the reversal's day)
    "reversed_value",
    "conflicts",  # offline records handed out against the rules (not counted above)
    "conflict_value",
    "refused",  # offline records that did not verify (station scope only)
)
N = len(FIELDS)
(REDEMPTIONS, QUANTITY, VALUE, OFFLINE, OFFLINE_VALUE) = range(5)
(REVERSALS, REVERSED_VALUE, CONFLICTS, CONFLICT_VALUE, REFUSED) = range(5, 10)

ALL_PROGRAMS = "*"
SENSITIVE_GROUPS = frozenset({"hardship"})  # never in clear on the chain: not a dimension
KIND_RANKS = {
    "national": 0,
    "provincial": 1,
    "city": 2,
    "county": 3,
    "township": 4,
    "enterprise": 5,
    "industry": 5,
    "regional": 5,
}

Key = tuple[str, str, str]  # scope, program, period
Counts = tuple[int, ...]  # one int per FIELDS


def china_day(time: str) -> str:
    """The China date (``YYYY-MM-DD``) of an RFC 3339 entry time."""
    return parse_entry_time(time).astimezone(CHINA).date().isoformat()


def china_day_of(seconds: int) -> str:
    """The China date of a NumericDate (an offline record's ``offline_at``)."""
    return _day_number((seconds + _CHINA_OFFSET) // 86400)


_CHINA_OFFSET = 8 * 3600  # China time has no daylight saving: a fixed UTC+8
_EPOCH_DAY = date(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _day_number(days: int) -> str:
    """``YYYY-MM-DD`` of the day ``days`` after 1970-01-01."""
    return (_EPOCH_DAY + timedelta(days=days)).isoformat()


def month(day: str) -> str:
    return day[:7]


def year(day: str) -> str:
    return day[:4]


@dataclass(frozen=True, slots=True)
class Posted:
    """A redemption as it was posted: what a reversal takes back."""

    program: str
    member: str
    station: str
    home: str
    funding: str
    operating: str
    quantity: int
    value: int
    day: str


class Context(Protocol):
    """The state of the chain just before the entry being folded."""

    def ancestors(self, union: str) -> Sequence[str]:
        """The union's chain, the national union first and the union itself last; empty
        for an unknown union."""
        ...

    def groups(self, member: str, day: str) -> Sequence[str]:
        """The member's non-sensitive groups on that day (spans ``start <= day < end``)."""
        ...

    def reversed_by(self, redemption: int, reversal: int) -> Posted | None:
        """The redemption that entry ``reversal`` reverses, or None when the reversal changes
        nothing (an unknown redemption, or one reversed already)."""
        ...


@dataclass(slots=True)
class Effect:
    """What one entry adds: ``cells``, pairs (keys, counts) where ``counts`` is added to every
    cell of ``keys``; and ``seen``, pairs (seen keys, scopes): each (anchor, program, period,
    member) key of ``seen keys`` adds one distinct member to every scope of ``scopes`` the first
    time it is seen. Grouped so that a projection can count the events of a batch per group
    (the events of one station's day share their keys) and spread the sums once."""

    cells: list[tuple[tuple[Key, ...], Counts]] = field(default_factory=list)
    seen: list[tuple[tuple[tuple[str, str, str, str], ...], tuple[str, ...]]] = field(
        default_factory=list
    )


_FIELD_AT = {name: i for i, name in enumerate(FIELDS)}


def _counts(**values: int) -> Counts:
    out = [0] * N
    for name, v in values.items():
        out[_FIELD_AT[name]] = v
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _recorded_counts(quantity: int, value: int, offline: bool) -> Counts:
    """The counts of one recorded redemption (one tuple per distinct quantity and value)."""
    return _counts(
        redemptions=1,
        quantity=quantity,
        value=value,
        offline=int(offline),
        offline_value=value if offline else 0,
    )


@functools.lru_cache(maxsize=4096)
def _cell_keys(
    chain: tuple[str, ...],
    program: str,
    *,
    home: str,
    station: str,
    day: str,
    groups: tuple[str, ...],
    pair: tuple[str, str] | None,
) -> tuple[Key, ...]:
    """The cells one member's event adds to (a pure function of its arguments, memoised: the
    events of a station's day share them)."""
    keys: list[Key] = [(f"O:{home}", program, day)]
    keys.extend((f"U:{code}", program, day) for code in chain)
    keys.append((f"S:{station}", program, day))
    for code in chain:
        keys.extend((f"G:{code}:{g}", program, month(day)) for g in groups)
    if pair is not None:
        keys.append((f"P:{pair[0]}>{pair[1]}", program, month(day)))
    return tuple(keys)


def _member_cells(
    effect: Effect,
    ctx: Context,
    *,
    program: str,
    member: str,
    home: str,
    station: str,
    day: str,
    counts: Counts,
    pair: tuple[str, str] | None,
) -> tuple[str, ...]:
    chain = tuple(ctx.ancestors(home))
    groups = tuple(sorted(set(ctx.groups(member, day))))
    keys = _cell_keys(chain, program, home=home, station=station, day=day, groups=groups, pair=pair)
    effect.cells.append((keys, counts))
    return chain


@functools.lru_cache(maxsize=1024)
def _home_scopes(home: str, chain: tuple[str, ...]) -> tuple[str, ...]:
    return (f"O:{home}", *(f"U:{c}" for c in chain))


def effect(entry: Entry, ctx: Context) -> Effect | None:
    """What ``entry`` adds to the figures (None: nothing). Pure, given the context."""
    t, b = entry.type, entry.body
    if t in ("RedemptionRecorded", "OfflineRedemptionRecorded"):
        offline = t == "OfflineRedemptionRecorded"
        day = china_day_of(b["offline_at"]) if offline else china_day(entry.time)
        counts = _recorded_counts(int(b["quantity"]), int(b["value"]), offline)
        out = Effect()
        chain = _member_cells(
            out,
            ctx,
            program=b["program"],
            member=b["member"],
            home=b["home"],
            station=b["station"],
            day=day,
            counts=counts,
            pair=(b["funding"], b["operating"]),
        )
        member, program = b["member"], b["program"]
        home_scopes = _home_scopes(b["home"], chain)
        anchor, station_scope = f"H:{b['home']}", f"S:{b['station']}"
        month_, year = day[:7], day[:4]
        out.seen = [
            (
                (
                    (anchor, program, month_, member),
                    (anchor, program, year, member),
                    (anchor, ALL_PROGRAMS, month_, member),
                    (anchor, ALL_PROGRAMS, year, member),
                ),
                home_scopes,
            ),
            (
                (
                    (station_scope, program, month_, member),
                    (station_scope, program, year, member),
                    (station_scope, ALL_PROGRAMS, month_, member),
                    (station_scope, ALL_PROGRAMS, year, member),
                ),
                (station_scope,),
            ),
        ]
        return out
    if t == "RedemptionReversed":
        posted = ctx.reversed_by(int(b["redemption"]), entry.index)
        if posted is None:
            return None
        out = Effect()
        _member_cells(
            out,
            ctx,
            program=posted.program,
            member=posted.member,
            home=posted.home,
            station=posted.station,
            day=china_day(entry.time),
            counts=_counts(reversals=1, reversed_value=posted.value),
            pair=(posted.funding, posted.operating),
        )
        return out
    if t == "OfflineRedemptionConflicted":
        out = Effect()
        _member_cells(
            out,
            ctx,
            program=b["program"],
            member=b["member"],
            home=b["home"],
            station=b["station"],
            day=china_day_of(b["offline_at"]),
            counts=_counts(conflicts=1, conflict_value=int(b["value"])),
            pair=None,
        )
        return out
    if t == "OfflineRecordRefused":
        day = china_day(entry.time)
        return Effect(cells=[(((f"S:{b['station']}", "", day),), _counts(refused=1))])
    return None


# -- the auditor's fold ------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    """Every figure, as exported by the server and recomputed by an auditor."""

    size: int
    cells: dict[Key, Counts]
    members: dict[Key, int]
    budgets: dict[tuple[str, str], int]  # (program, funding union) -> fen used, net

    def to_json(self, root: bytes | None = None) -> dict[str, Any]:
        """The canonical export (docs/stats.md section 4)."""
        out: dict[str, Any] = {"format": FORMAT, "size": self.size}
        if root is not None:
            out["root"] = base64.b64encode(root).decode()
        out["cells"] = [[*k, *v] for k, v in sorted(self.cells.items()) if any(v)]
        out["members"] = [[*k, n] for k, n in sorted(self.members.items()) if n]
        out["budgets"] = [[p, f, n] for (p, f), n in sorted(self.budgets.items())]
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Figures:
        """Read an export; raises ValueError on anything malformed."""
        try:
            if doc.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} document")
            cells: dict[Key, Counts] = {}
            for row in doc["cells"]:
                if len(row) != 3 + N or not all(isinstance(x, str) for x in row[:3]):
                    raise ValueError(f"bad cell {row!r}")
                cells[(row[0], row[1], row[2])] = tuple(_int(x) for x in row[3:])
            members = {}
            for row in doc["members"]:
                if len(row) != 4 or not all(isinstance(x, str) for x in row[:3]):
                    raise ValueError(f"bad members row {row!r}")
                members[(row[0], row[1], row[2])] = _int(row[3])
            budgets = {}
            for row in doc["budgets"]:
                if len(row) != 3 or not all(isinstance(x, str) for x in row[:2]):
                    raise ValueError(f"bad budget row {row!r}")
                budgets[(row[0], row[1])] = _int(row[2])
            return cls(_int(doc["size"]), cells, members, budgets)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed statistics document: {e}") from e


def _int(x: object) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise ValueError(f"{x!r} is not an integer")
    return x


class Recompute:
    """Folds verified entries, in order from index 0, into :class:`Figures`, keeping the
    context (union tree, group spans, redemptions) in memory. Mirrors the server's projections
    (ledger/unions.py, ledger/members.py, ledger/redemptions.py) for the facts it needs."""

    def __init__(self) -> None:
        self.size = 0
        self._parent: dict[str, str | None] = {}
        self._rank: dict[str, int] = {}
        self._spans: dict[str, list[list[Any]]] = {}  # member -> [[group, start, end], ...]
        self._posted: dict[int, Posted] = {}
        self._reversed: set[int] = set()
        self.cells: dict[Key, list[int]] = {}
        self.members: dict[Key, int] = {}
        self._seen: set[tuple[str, str, str, str]] = set()
        self.budgets: dict[tuple[str, str], int] = {}

    # Context
    def ancestors(self, union: str) -> Sequence[str]:
        if union not in self._parent:
            return ()
        chain = []
        code: str | None = union
        while code is not None:
            chain.append(code)
            code = self._parent[code]
        return chain[::-1]

    def groups(self, member: str, day: str) -> Sequence[str]:
        return [
            g
            for g, start, end in self._spans.get(member, ())
            if start <= day and (end is None or end > day)
        ]

    def reversed_by(self, redemption: int, reversal: int) -> Posted | None:
        if redemption in self._reversed:
            return None
        return self._posted.get(redemption)

    # The fold
    def take(self, entry: Entry) -> None:
        if entry.index != self.size:
            raise ValueError(f"entry {entry.index} out of order: expected {self.size}")
        self.size += 1
        found = effect(entry, self)  # the context before this entry
        if found is not None:
            self._add(found)
        self._track(entry)

    def take_all(self, entries: Iterable[Entry]) -> Recompute:
        for e in entries:
            self.take(e)
        return self

    def _add(self, found: Effect) -> None:
        for keys, counts in found.cells:
            for key in keys:
                cell = self.cells.get(key)
                if cell is None:
                    self.cells[key] = list(counts)
                else:
                    for i, c in enumerate(counts):
                        cell[i] += c
        for seen_keys, scopes in found.seen:
            for seen_key in seen_keys:
                if seen_key in self._seen:
                    continue
                self._seen.add(seen_key)
                _, program, period, _ = seen_key
                for scope in scopes:
                    k = (scope, program, period)
                    self.members[k] = self.members.get(k, 0) + 1

    def _track(self, entry: Entry) -> None:
        t, b = entry.type, entry.body
        if t == "UnionCreated":
            self._created(b)
        elif t == "UnionMoved":
            self._moved(b)
        elif t == "MemberEnrolled":
            spans = self._spans.setdefault(b["member"], [])
            for g in b.get("groups", ()):
                if g not in SENSITIVE_GROUPS:
                    spans.append([g, entry.time[:10], None])
        elif t == "MemberGroupAdded" and b["group"] not in SENSITIVE_GROUPS:
            self._spans.setdefault(b["member"], []).append([b["group"], b["from"], None])
        elif t == "MemberGroupEnded":
            for span in self._spans.get(b["member"], ()):
                if span[0] == b["group"] and span[2] is None:
                    span[2] = b["until"]
        elif t in ("RedemptionRecorded", "OfflineRedemptionRecorded"):
            offline = t == "OfflineRedemptionRecorded"
            day = china_day_of(b["offline_at"]) if offline else china_day(entry.time)
            self._posted[entry.index] = Posted(
                b["program"],
                b["member"],
                b["station"],
                b["home"],
                b["funding"],
                b["operating"],
                int(b["quantity"]),
                int(b["value"]),
                day,
            )
            key = (b["program"], b["funding"])
            self.budgets[key] = self.budgets.get(key, 0) + int(b["value"])
        elif t == "RedemptionReversed":
            index = int(b["redemption"])
            posted = self._posted.get(index)
            if posted is not None and index not in self._reversed:
                self._reversed.add(index)
                key = (posted.program, posted.funding)
                self.budgets[key] -= posted.value

    def _created(self, b: Mapping[str, Any]) -> None:
        code, parent, kind = b.get("code"), b.get("parent"), b.get("kind")
        if not isinstance(code, str) or code in self._parent or kind not in KIND_RANKS:
            return
        rank = KIND_RANKS[kind]
        if parent is None:
            if rank != 0 or any(p is None for p in self._parent.values()):
                return
        elif parent not in self._parent or rank <= self._rank[parent]:
            return
        self._parent[code], self._rank[code] = parent, rank

    def _moved(self, b: Mapping[str, Any]) -> None:
        code, parent = b.get("code"), b.get("parent")
        if code not in self._parent or parent not in self._parent:
            return
        if code in self.ancestors(parent) or self._rank[code] <= self._rank[parent]:
            return
        self._parent[code] = parent

    def figures(self) -> Figures:
        return Figures(
            self.size,
            {k: tuple(v) for k, v in self.cells.items()},
            dict(self.members),
            dict(self.budgets),
        )


def compare(published: Figures, recomputed: Figures, *, limit: int = 20) -> list[str]:
    """The differences, first ``limit`` of them, in a stable order; empty when identical."""
    out: list[str] = []
    if published.size != recomputed.size:
        out.append(f"size: published {published.size}, recomputed {recomputed.size}")
    zero = (0,) * N
    for key in sorted(set(published.cells) | set(recomputed.cells)):
        a, b = published.cells.get(key, zero), recomputed.cells.get(key, zero)
        if a != b:
            diffs = ", ".join(
                f"{FIELDS[i]} published {x} recomputed {y}"
                for i, (x, y) in enumerate(zip(a, b, strict=True))
                if x != y
            )
            out.append(f"cell {'/'.join(key)}: {diffs}")
    for key in sorted(set(published.members) | set(recomputed.members)):
        x, y = published.members.get(key, 0), recomputed.members.get(key, 0)
        if x != y:
            out.append(f"members {'/'.join(key)}: published {x} recomputed {y}")
    for bkey in sorted(set(published.budgets) | set(recomputed.budgets)):
        x, y = published.budgets.get(bkey, 0), recomputed.budgets.get(bkey, 0)
        if x != y:
            out.append(f"budget {bkey[0]}/{bkey[1]}: published {x} recomputed {y}")
    return out[:limit]


def suppress(value: int | None, threshold: int) -> int | None:
    """A published count smaller than ``threshold`` (but not zero) is withheld: None."""
    if value is None or value == 0 or value >= threshold:
        return value
    return None


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class Recomputed:
    """The outcome of :func:`recompute_from`: the differences (empty: identical) and the
    checkpoint size the chain was verified up to."""

    differences: list[str]
    verified_size: int
    figures: Figures


def recompute_from(
    source: LogSource,
    verifier: NoteVerifier,
    published: Figures,
    published_root: bytes | None,
    *,
    origin: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    limit: int = 20,
) -> Recomputed:
    """The auditor's proof (docs/stats.md section 5): verify the whole chain behind ``source``
    against its signed checkpoint (``verifier.audit``), fold its first ``published.size``
    entries, check that their Merkle root is ``published_root``, and compare the figures.

    Raises:
        AuditFailure: the chain does not verify.
        SourceError: the source could not be read.
    """
    fold, leaves = Recompute(), CompactRange()
    wanted = published.size

    def visit(start: int, datas: Sequence[bytes]) -> None:
        for data in datas[: max(0, wanted - start)]:
            fold.take(parse_entry(data))
            leaves.append(leaf_hash(data))

    result = audit(source, verifier, origin=origin, progress=progress, visit=visit)
    differences: list[str] = []
    if result.entries < wanted:
        differences.append(
            f"the figures are pinned at size {wanted}, beyond the signed checkpoint "
            f"({result.entries}): fetch them again after the next checkpoint"
        )
    elif published_root is not None and leaves.root() != published_root:
        differences.append(
            f"the root of the first {wanted} entries is not the one the figures name"
        )
    recomputed = fold.figures()
    differences += compare(published, recomputed, limit=limit)
    return Recomputed(differences[:limit], result.entries, recomputed)
