"""The union tree: national federation → provinces → cities → counties → townships → grassroots.

State is the ``unions`` projection of five events, all appended by the commands below:

- ``UnionCreated`` {code, name, kind, parent, join_code, auto_approve}
- ``UnionRenamed`` {code, name}
- ``UnionMoved`` {code, parent}
- ``UnionClosed`` {code}
- ``UnionJoinPolicySet`` {code, auto_approve}

Each row carries a materialised path, ``"/" + codes from the root joined by "/" + "/"`` (for
example ``/100000/110000/110100/``). A code is ``[0-9A-Za-z][0-9A-Za-z-]{0,31}``, so a path never
holds a byte that sorts between ``/`` and ``0``: the subtree of a union whose path is ``P`` is
exactly the byte-wise range ``P <= path < P[:-1] + "0"``, and ordering by path is a depth-first
walk (a union, then its whole subtree). SQLite compares text byte-wise already; on PostgreSQL the
column is declared ``COLLATE "C"``, since a linguistic collation (en_US, ICU) ignores ``-`` and
``/`` and would break both the range and the order.

``members_own`` and ``members_subtree`` are maintained by whoever records members (through
:func:`adjust_member_counts`, from their projection's ``apply``): a parent's ``members_subtree``
always equals its ``members_own`` plus its children's ``members_subtree``, so a subtree's head
count is one row read.

Commands (``def cmd(tx, actor, ...) -> Entry``) check everything through ``tx.conn`` and raise a
:class:`~ledger.domain.DomainError` before appending. The system may do anything; an official
acts inside the subtree of ``actor.scope`` only, and a union outside it is reported exactly like
a missing one; auditors, members and stations may not change the tree.
"""

from __future__ import annotations

import enum
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeGuard

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Connection,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal,
    select,
    update,
)

from ledger.domain import Actor, Conflict, Forbidden, Invalid, NotFound, Role
from ledger.schema import projection_metadata
from ledger.sequencer import Tx
from verifier.entry import Entry


class Kind(enum.StrEnum):
    """The level of a union in the tree."""

    NATIONAL = "national"
    PROVINCIAL = "provincial"
    CITY = "city"
    COUNTY = "county"  # county or district
    TOWNSHIP = "township"  # township, street or industrial-park federation
    ENTERPRISE = "enterprise"
    INDUSTRY = "industry"
    REGIONAL = "regional"

    @property
    def rank(self) -> int:
        """0 for the national federation .. 5 for grassroots unions; a child's is greater."""
        return RANK[self]


RANK: Mapping[Kind, int] = {
    Kind.NATIONAL: 0,
    Kind.PROVINCIAL: 1,
    Kind.CITY: 2,
    Kind.COUNTY: 3,
    Kind.TOWNSHIP: 4,
    Kind.ENTERPRISE: 5,
    Kind.INDUSTRY: 5,
    Kind.REGIONAL: 5,
}
GRASSROOTS = frozenset({Kind.ENTERPRISE, Kind.INDUSTRY, Kind.REGIONAL})


class Status(enum.StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


CODE_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,31}")
NAME_MAX = 200
JOIN_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
JOIN_CODE_LENGTH = 10  # 50 random bits
# Ranks strictly increase downwards, so a path holds at most 6 codes of at most 32 characters.
PATH_MAX = 6 * 33 + 1
PAGE_MAX = 1000

# --- errors ------------------------------------------------------------------------------------


class UnknownUnion(NotFound):
    """No such union (or not visible to this actor)."""

    code = "unknown-union"
    status = 404


class UnionClosed(Conflict):
    """The union is closed."""

    code = "union-closed"
    status = 409


class DuplicateUnion(Conflict):
    """A union with this code already exists."""

    code = "duplicate-union"
    status = 409


class UnionNotEmpty(Conflict):
    """The union still has active child unions or members."""

    code = "union-not-empty"
    status = 409


class BadTreeShape(Invalid):
    """The union tree would be malformed (level order, a cycle, a second national union)."""

    code = "bad-tree-shape"
    status = 422


class BadUnionCode(Invalid):
    """Not a valid union code (1 to 32 letters, digits and hyphens, not starting with one)."""

    code = "bad-union-code"
    status = 422


class BadUnionName(Invalid):
    """Not a valid union name (1 to 200 characters, no control characters or edge spaces)."""

    code = "bad-union-name"
    status = 422


class UnknownKind(Invalid):
    """Not a kind of union."""

    code = "unknown-union-kind"
    status = 422


def _unknown(code: object) -> UnknownUnion:
    # One message for "missing" and "outside your subtree": the reply must not tell them apart.
    return UnknownUnion(f"no union {code!r}")


# --- the table ---------------------------------------------------------------------------------

_PATH_TYPE = String(PATH_MAX).with_variant(String(PATH_MAX, collation="C"), "postgresql")

unions = Table(
    "unions",
    projection_metadata,
    Column("code", String(32), primary_key=True),
    Column("name", String(NAME_MAX), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("parent", String(32), ForeignKey("unions.code"), nullable=True),
    Column("path", _PATH_TYPE, nullable=False),
    Column("depth", Integer, nullable=False),
    Column("status", String(8), nullable=False),
    Column("join_code", String(JOIN_CODE_LENGTH), nullable=False, unique=True),
    Column("auto_approve", Boolean, nullable=False),
    Column("members_own", BigInteger, nullable=False),
    Column("members_subtree", BigInteger, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Index("ix_unions_path", "path"),
    Index("ix_unions_parent", "parent"),
)


@dataclass(frozen=True, slots=True)
class UnionRow:
    """One row of ``unions``."""

    code: str
    name: str
    kind: Kind
    parent: str | None
    path: str
    depth: int
    status: Status
    join_code: str
    auto_approve: bool
    members_own: int
    members_subtree: int
    created_at: str
    updated_at: str

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE

    @property
    def chain(self) -> list[str]:
        """The codes from the national root down to this union."""
        return path_codes(self.path)


_KIND_OF: Mapping[str, Kind] = {k.value: k for k in Kind}
_STATUS_OF: Mapping[str, Status] = {s.value: s for s in Status}
# _row unpacks rows by position (listing 100 rows by name cost 3x as much): keep them in step.
assert [c.name for c in unions.columns] == [f.name for f in fields(UnionRow)]


def _row(r: Any) -> UnionRow:
    code, name, kind, parent, path, depth, status, join_code, auto, own, below, created, at = r
    return UnionRow(
        code,
        name,
        _KIND_OF[kind],
        parent,
        path,
        depth,
        _STATUS_OF[status],
        join_code,
        bool(auto),
        own,
        below,
        created,
        at,
    )


def path_codes(path: str) -> list[str]:
    """``"/a/b/c/"`` → ``["a", "b", "c"]``."""
    return path[1:-1].split("/")


def path_upper(prefix: str) -> str:
    """The least string above every path that starts with ``prefix`` (which ends in ``/``):
    ``/`` is 0x2F and ``0`` 0x30, and no code holds a byte between them."""
    return prefix[:-1] + "0"


def _in_subtree(prefix: str) -> ColumnElement[bool]:
    return and_(unions.c.path >= prefix, unions.c.path < path_upper(prefix))


def _is_code(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and CODE_RE.fullmatch(value) is not None


def _contains(path: str, code: str) -> bool:
    # A code holds no "/", so "/code/" occurs in a path exactly when code is on it.
    return bool(CODE_RE.fullmatch(code)) and f"/{code}/" in path


# --- queries -----------------------------------------------------------------------------------
#
# The statements on hot paths (a member joining, a head count) are built once: building one costs
# more than SQLite takes to run it.

_BY_CODE = select(unions).where(unions.c.code == bindparam("code"))
_BY_JOIN_CODE = select(unions).where(unions.c.join_code == bindparam("join_code"))
_PATH = select(unions.c.path).where(unions.c.code == bindparam("code"))
_SUBTREE_COUNT = select(unions.c.members_subtree).where(unions.c.code == bindparam("code"))
_PATH_AND_OWN = select(unions.c.path, unions.c.members_own).where(
    unions.c.code == bindparam("code")
)
_A_NATIONAL = select(unions.c.code).where(unions.c.kind == Kind.NATIONAL.value).limit(1)
_DELTA = bindparam("delta", type_=BigInteger)
_ADD_SUBTREE = (
    update(unions)
    .where(unions.c.code.in_(bindparam("chain", expanding=True)))
    .values(members_subtree=unions.c.members_subtree + _DELTA)
)
_ADD_MEMBERS = _ADD_SUBTREE.values(
    members_own=unions.c.members_own + case((unions.c.code == bindparam("own"), _DELTA), else_=0)
)


def get_union(conn: Connection, code: str) -> UnionRow | None:
    """The union ``code``, open or closed, or ``None``."""
    r = conn.execute(_BY_CODE, {"code": code}).first()
    return None if r is None else _row(r)


def union_by_join_code(conn: Connection, join_code: str) -> UnionRow | None:
    """The union whose join code is ``join_code`` (open or closed), or ``None``."""
    r = conn.execute(_BY_JOIN_CODE, {"join_code": join_code}).first()
    return None if r is None else _row(r)


def visible(conn: Connection, actor: Actor, code: str) -> UnionRow | None:
    """The union ``code`` if ``actor`` may see it, else ``None`` (missing and hidden alike).

    The system and auditors see every union; an official, the subtree of ``actor.scope`` (an
    official whose scope is not a union sees nothing); members and stations, none.
    """
    if actor.role in (Role.SYSTEM, Role.AUDITOR):
        return get_union(conn, code)
    if actor.role is Role.OFFICIAL and actor.scope is not None:
        row = get_union(conn, code)
        if row is not None and _contains(row.path, actor.scope):
            return row
    return None


def require_active_union(conn: Connection, actor: Actor, code: str) -> UnionRow:
    """The union ``code``, visible to ``actor`` and active.

    Raises:
        UnknownUnion: missing, or not visible to ``actor``.
        UnionClosed: it is closed.
    """
    row = visible(conn, actor, code)
    if row is None:
        raise _unknown(code)
    if not row.active:
        raise UnionClosed(f"union {code!r} is closed")
    return row


def is_within(conn: Connection, ancestor_code: str, code: str) -> bool:
    """Whether ``code`` is ``ancestor_code`` or below it (``False`` when either is missing)."""
    path = conn.execute(_PATH, {"code": code}).scalar()
    return path is not None and _contains(path, ancestor_code)


def chain(conn: Connection, code: str) -> list[str]:
    """The codes from the national root down to ``code``, both included.

    Raises:
        UnknownUnion: no such union.
    """
    path = conn.execute(_PATH, {"code": code}).scalar()
    if path is None:
        raise _unknown(code)
    return path_codes(path)


def children(conn: Connection, code: str) -> list[UnionRow]:
    """The unions whose parent is ``code`` (open and closed), in path order.

    Raises:
        UnknownUnion: no such union.
    """
    rows = conn.execute(select(unions).where(unions.c.parent == code).order_by(unions.c.path)).all()
    if not rows and get_union(conn, code) is None:
        raise _unknown(code)
    return [_row(r) for r in rows]


def list_subtree(
    conn: Connection,
    code: str,
    *,
    kind: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[UnionRow]:
    """One page of the subtree of ``code`` (``code`` itself included), depth-first (by path),
    optionally only of one ``kind`` or ``status``. For the next page pass the last row's path as
    ``after``: a keyset page costs the same at any depth of the listing.

    Raises:
        UnknownUnion: no such union.
        UnknownKind: ``kind`` is not a kind.
        ValueError: ``status`` is not a status, or ``limit`` is outside 1..1000.
    """
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be 1..{PAGE_MAX}")
    root = conn.execute(_PATH, {"code": code}).scalar()
    if root is None:
        raise _unknown(code)
    # One lower bound, not two: SQLite seeks the index on only one of them and would scan
    # from the subtree's start to ``after`` to apply the other.
    if after is not None and after >= root:
        query = select(unions).where(unions.c.path > after, unions.c.path < path_upper(root))
    else:
        query = select(unions).where(_in_subtree(root))
    if kind is not None:
        query = query.where(unions.c.kind == _kind(kind).value)
    if status is not None:
        query = query.where(unions.c.status == Status(status).value)
    rows = conn.execute(query.order_by(unions.c.path).limit(limit)).all()
    return [_row(r) for r in rows]


def subtree_member_count(conn: Connection, code: str) -> int:
    """Members of ``code`` and every union below it: one row read.

    Raises:
        UnknownUnion: no such union.
    """
    count = conn.execute(_SUBTREE_COUNT, {"code": code}).scalar()
    if count is None:
        raise _unknown(code)
    return int(count)


def adjust_member_counts(conn: Connection, code: str, delta: int) -> None:
    """Add ``delta`` to the members of ``code``: to its ``members_own``, and to the
    ``members_subtree`` of it and every ancestor, in one UPDATE. For the members projection's
    ``apply``: a plain write, not a command (it appends nothing and checks no access).

    Raises:
        UnknownUnion: no such union.
        ValueError: ``members_own`` would become negative (a bug upstream; fail closed).
        TypeError: ``delta`` is not an int.
    """
    if type(delta) is not int:
        raise TypeError("delta must be an int")
    if delta == 0:
        return
    r = conn.execute(_PATH_AND_OWN, {"code": code}).first()
    if r is None:
        raise _unknown(code)
    if r.members_own + delta < 0:
        raise ValueError(f"union {code!r} has {r.members_own} members, cannot add {delta}")
    conn.execute(_ADD_MEMBERS, {"chain": path_codes(r.path), "own": code, "delta": delta})


# --- commands ----------------------------------------------------------------------------------


def new_join_code() -> str:
    """A fresh random join code: 10 characters of Crockford base32 (50 bits)."""
    return "".join(secrets.choice(JOIN_CODE_ALPHABET) for _ in range(JOIN_CODE_LENGTH))


def _require_writer(actor: Actor) -> None:
    if actor.role is Role.SYSTEM:
        return
    if actor.role is Role.OFFICIAL and actor.scope is not None and CODE_RE.fullmatch(actor.scope):
        return
    raise Forbidden(f"{actor.role.value} may not change the union tree")


def _forbid_own_scope(actor: Actor, code: str, what: str) -> None:
    if actor.role is Role.OFFICIAL and code == actor.scope:
        raise Forbidden(f"an official may not {what} the union they administer")


def _check_code(code: object) -> str:
    if not isinstance(code, str) or not CODE_RE.fullmatch(code):
        raise BadUnionCode(f"bad union code {code!r}")
    return code


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not 0 < len(name) <= NAME_MAX or name != name.strip():
        return "a union name is 1 to 200 characters without edge spaces"
    if any(unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" for ch in name):
        return "a union name may not hold control or format characters"
    return None


def _check_name(name: object) -> str:
    problem = _name_problem(name)
    if problem is not None:
        raise BadUnionName(problem)
    assert isinstance(name, str)
    return name


def _kind(kind: object) -> Kind:
    if not isinstance(kind, str) or kind not in _KINDS:
        raise UnknownKind(f"unknown union kind {kind!r}")
    return Kind(kind)


def _check_flag(value: object) -> bool:
    if type(value) is not bool:
        raise TypeError("auto_approve must be a bool")
    return value


def _check_rank(kind: Kind, parent: UnionRow) -> None:
    if kind.rank <= parent.kind.rank:
        raise BadTreeShape(f"a {kind.value} union cannot sit below a {parent.kind.value} union")


def create_union(
    tx: Tx,
    actor: Actor,
    *,
    code: str,
    name: str,
    kind: str,
    parent: str | None,
    auto_approve: bool = False,
) -> Entry:
    """Create a union below ``parent`` (``None`` only for the one national federation); its
    random join code is drawn here and recorded in the event, so a rebuild reproduces it.

    Raises:
        Forbidden: the actor may not change the tree (or, as an official, create a national).
        BadUnionCode, BadUnionName, UnknownKind: malformed input.
        UnknownUnion: ``parent`` is missing or outside the actor's subtree.
        UnionClosed: ``parent`` is closed.
        DuplicateUnion: ``code`` is taken.
        BadTreeShape: a second national union, a missing or extra parent, or a kind that does
            not rank below its parent's.
    """
    _require_writer(actor)
    _check_code(code)
    _check_name(name)
    level = _kind(kind)
    _check_flag(auto_approve)
    conn = tx.conn
    above = None
    if level is Kind.NATIONAL:
        if actor.role is not Role.SYSTEM:
            raise Forbidden("only the system creates the national federation")
    elif parent is None:
        raise BadTreeShape(f"a {level.value} union needs a parent")
    if parent is not None:
        above = require_active_union(conn, actor, parent)
    if get_union(conn, code) is not None:
        raise DuplicateUnion(f"union {code!r} already exists")
    if above is None:
        if conn.execute(_A_NATIONAL).first() is not None:
            raise BadTreeShape("there is already a national federation")
    else:
        _check_rank(level, above)
    join_code = new_join_code()
    while union_by_join_code(conn, join_code) is not None:  # 50 bits: practically never
        join_code = new_join_code()
    body = {
        "code": code,
        "name": name,
        "kind": level.value,
        "parent": parent,
        "join_code": join_code,
        "auto_approve": auto_approve,
    }
    return tx.append("UnionCreated", actor.ledger_actor, body)


def rename_union(tx: Tx, actor: Actor, *, code: str, name: str) -> Entry:
    """Rename an active union (an official may rename the union they administer).

    Raises:
        Forbidden, BadUnionName, UnknownUnion, UnionClosed.
    """
    _require_writer(actor)
    _check_name(name)
    require_active_union(tx.conn, actor, code)
    return tx.append("UnionRenamed", actor.ledger_actor, {"code": code, "name": name})


def move_union(tx: Tx, actor: Actor, *, code: str, parent: str) -> Entry:
    """Move an active union, with its whole subtree and its members, below ``parent``.

    Raises:
        Forbidden: not a writer, or an official moving the union they administer.
        UnknownUnion: ``code`` or ``parent`` missing or outside the actor's subtree.
        UnionClosed: either is closed.
        BadTreeShape: the national union, a parent inside the union's own subtree (a cycle),
            or a parent that does not rank above the union.
    """
    _require_writer(actor)
    conn = tx.conn
    row = require_active_union(conn, actor, code)
    _forbid_own_scope(actor, code, "move")
    if row.kind is Kind.NATIONAL:
        raise BadTreeShape("the national federation has no parent")
    above = require_active_union(conn, actor, parent)
    if _contains(above.path, code):
        raise BadTreeShape(f"{parent!r} is inside the subtree of {code!r}")
    _check_rank(row.kind, above)
    return tx.append("UnionMoved", actor.ledger_actor, {"code": code, "parent": parent})


def close_union(tx: Tx, actor: Actor, *, code: str) -> Entry:
    """Close an active union that has no active child unions and no members (closed children
    may stay below it).

    Raises:
        Forbidden: not a writer, or an official closing the union they administer.
        UnknownUnion, UnionClosed.
        UnionNotEmpty: active children, or members in its subtree.
    """
    _require_writer(actor)
    conn = tx.conn
    row = require_active_union(conn, actor, code)
    _forbid_own_scope(actor, code, "close")
    active_child = select(unions.c.code).where(
        unions.c.parent == code, unions.c.status == Status.ACTIVE.value
    )
    if conn.execute(active_child.limit(1)).first() is not None:
        raise UnionNotEmpty(f"union {code!r} has active child unions")
    # members_subtree, not only members_own: members under a closed child still count.
    if row.members_subtree > 0:
        raise UnionNotEmpty(f"union {code!r} has {row.members_subtree} members")
    return tx.append("UnionClosed", actor.ledger_actor, {"code": code})


def set_join_policy(tx: Tx, actor: Actor, *, code: str, auto_approve: bool) -> Entry:
    """Whether applications to join an active union are approved at once.

    Raises:
        Forbidden, UnknownUnion, UnionClosed; TypeError: ``auto_approve`` is not a bool.
    """
    _require_writer(actor)
    _check_flag(auto_approve)
    require_active_union(tx.conn, actor, code)
    body = {"code": code, "auto_approve": auto_approve}
    return tx.append("UnionJoinPolicySet", actor.ledger_actor, body)


# --- the projection ----------------------------------------------------------------------------
#
# The commands make sure each event fits the tree. An event they would have refused can only come
# from a direct append; the projection must not fail on anything the ledger accepted, so an event
# that would break the table's shape (a missing union, a cycle, ranks out of order, a second
# national union, a duplicate code or join code, a malformed field) leaves the table unchanged,
# deterministically: a rebuild does the same. Policy (a closed parent, an official's scope) is the
# commands' alone.


def _created(conn: Connection, entry: Entry) -> None:
    b = entry.body
    code, parent, join_code = b.get("code"), b.get("parent"), b.get("join_code")
    name, kind = b.get("name"), b.get("kind")
    if not (_is_code(code) and (parent is None or _is_code(parent))):
        return
    if _name_problem(name) or kind not in _KINDS or not isinstance(join_code, str):
        return
    if len(join_code) != JOIN_CODE_LENGTH:
        return
    if get_union(conn, code) is not None or union_by_join_code(conn, join_code) is not None:
        return
    level = _KIND_OF[kind]
    if parent is None:
        if level is not Kind.NATIONAL or conn.execute(_A_NATIONAL).first() is not None:
            return
        path, depth = f"/{code}/", 0
    else:
        up = get_union(conn, parent)
        if up is None or level.rank <= up.kind.rank:
            return
        path, depth = f"{up.path}{code}/", up.depth + 1
    conn.execute(
        unions.insert().values(
            code=code,
            name=name,
            kind=kind,
            parent=parent,
            path=path,
            depth=depth,
            status=Status.ACTIVE.value,
            join_code=join_code,
            auto_approve=b.get("auto_approve") is True,
            members_own=0,
            members_subtree=0,
            created_at=entry.time,
            updated_at=entry.time,
        )
    )


def _moved(conn: Connection, entry: Entry) -> None:
    code, parent = entry.body.get("code"), entry.body.get("parent")
    if not (_is_code(code) and _is_code(parent)):
        return
    row, up = get_union(conn, code), get_union(conn, parent)
    if row is None or up is None or _contains(up.path, code) or row.kind.rank <= up.kind.rank:
        return
    old, new = row.path, f"{up.path}{code}/"
    # The whole subtree is re-pathed in one statement: the new prefix + what followed the old.
    conn.execute(
        update(unions)
        .where(_in_subtree(old))
        .values(
            path=literal(new, String).concat(func.substr(unions.c.path, len(old) + 1)),
            depth=unions.c.depth + (up.depth + 1 - row.depth),
            updated_at=entry.time,
        )
    )
    conn.execute(update(unions).where(unions.c.code == code).values(parent=parent))
    moving = row.members_subtree
    if moving:
        before, after = set(path_codes(old)[:-1]), set(path_codes(new)[:-1])
        for codes, delta in ((before - after, -moving), (after - before, moving)):
            if codes:
                conn.execute(_ADD_SUBTREE, {"chain": sorted(codes), "delta": delta})


def _setter(column: str, value: Callable[[Mapping[str, Any]], object]) -> _Apply:
    def apply(conn: Connection, entry: Entry) -> None:
        code, new = entry.body.get("code"), value(entry.body)
        if _is_code(code) and new is not None:
            conn.execute(
                update(unions)
                .where(unions.c.code == code)
                .values({column: new, "updated_at": entry.time})
            )

    return apply


def _name(body: Mapping[str, Any]) -> str | None:
    name = body.get("name")
    return None if _name_problem(name) else name


def _flag(body: Mapping[str, Any]) -> bool | None:
    flag = body.get("auto_approve")
    return flag if isinstance(flag, bool) else None


_Apply = Callable[[Connection, Entry], None]
_KINDS = frozenset(k.value for k in Kind)
_APPLY: Mapping[str, _Apply] = {
    "UnionCreated": _created,
    "UnionRenamed": _setter("name", _name),
    "UnionMoved": _moved,
    "UnionClosed": _setter("status", lambda b: Status.CLOSED.value),
    "UnionJoinPolicySet": _setter("auto_approve", _flag),
}
EVENT_TYPES = frozenset(_APPLY)


class UnionsProjection:
    """The ``unions`` table. Writes in :meth:`apply`, because commands later in the same batch
    read the tree (a parent created a moment ago, a join code just drawn)."""

    name = "unions"
    tables: Sequence[Table] = (unions,)

    def apply(self, conn: Connection, entry: Entry) -> None:
        handler = _APPLY.get(entry.type)
        if handler is not None:
            handler(conn, entry)

    def flush(self, conn: Connection) -> None:
        pass

    def reset(self) -> None:
        pass
