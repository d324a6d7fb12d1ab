"""Statistics and reconciliation (后台统计), docs/stats.md section 3.

Officials see their subtree, auditors everything; nothing here names a person. Every answer
names the ledger it was computed at (``pinned``: tree size and root). Counts below the
published threshold (``UNIONLEDGER_STATS_MIN_CELL``, default 5) are withheld for officials;
auditors see every figure unless they ask ``suppress=true`` (what officials see).

- ``GET /v1/stats/unions/{code}``: own and subtree figures per program, groups, children,
  budgets; ``GET /v1/stats/unions/{code}/series``: per day (charts, burn-down);
- ``GET /v1/stats/stations/{id}``: a station's figures per program;
- ``GET /v1/stats/unions/{code}/statement``, ``GET /v1/stats/stations/{id}/statement``: a day;
- ``GET /v1/stats/settlement``: what funding unions owe operating unions;
- ``GET /v1/stats/anomalies``;
- ``GET /v1/stats/export`` (auditors): every figure, for ``unionledger stats recompute``.

``format=csv`` gives the table of each as CSV (``text/csv``, UTF-8).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from api.auth import AuditorOrOfficialDep
from api.deps import ServicesDep
from ledger import stats as ls
from ledger.domain import Actor, Forbidden, Role
from verifier import stats as vs

router = APIRouter(tags=["statistics"])

DATE = r"^\d{4}-\d{2}-\d{2}$"
Day = Annotated[str | None, Query(pattern=DATE, description="China date")]
Format = Annotated[Literal["json", "csv"], Query()]
UnionCode = Annotated[str, Path(max_length=32)]
StationId = Annotated[str, Path(max_length=64)]


def _span(
    start: Annotated[
        str | None, Query(alias="from", pattern=DATE, description="China date")
    ] = None,
    end: Annotated[str | None, Query(alias="to", pattern=DATE, description="default today")] = None,
) -> tuple[str, str]:
    """The ``from``/``to`` query pair, checked (``invalid-period``)."""
    return ls.parse_range(start, end)


SpanDep = Annotated[tuple[str, str], Depends(_span)]


def _day(day: str | None) -> str:
    """A checked China date; default today."""
    return ls.parse_range(day, day)[0] if day else ls.parse_range(None, None)[1]


def _suppression(services: Any, actor: Actor, suppress: bool | None) -> ls.Suppression:
    if actor.role is Role.AUDITOR and not suppress:
        return ls.NO_SUPPRESSION
    return ls.Suppression(services.settings.stats_min_cell)


def _answer(
    services: Any,
    read: Callable[[Connection], Any],
    fmt: str,
    rows: Callable[[Any], Iterable[dict[str, Any]]],
    name: str,
) -> Response:
    got = ls.pinned(services.engine, read)
    if fmt == "csv":
        return _csv(rows(got.value), name, got)
    doc = got.value if isinstance(got.value, dict) else {"items": got.value}
    return JSONResponse({**doc, "pinned": got.pin()})


def _csv(rows: Iterable[dict[str, Any]], name: str, got: ls.Pinned[Any]) -> Response:
    # The columns are every row's members, in first-seen order: a withheld figure set adds
    # "suppressed" to its row only (it once made the writer raise, a 500, for officials).
    table = [{k: "" if v is None else v for k, v in row.items()} for row in rows]
    columns: dict[str, None] = {}
    for row in table:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    if table:
        writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(table)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.csv"',
            "UnionLedger-Pinned": f"{got.size} {got.pin()['root']}",
        },
    )


def figure_rows(
    doc: dict[str, Any], parts: tuple[str, ...] = ("subtree", "own")
) -> Iterable[dict[str, Any]]:
    for part in parts:
        block = doc[part]
        yield {"part": part, "program": "*", **block["total"]}
        for program, figures in block["programs"].items():
            yield {"part": part, "program": program, **figures}


@router.get("/v1/stats/unions/{code}", summary="A union's own and subtree figures")
def union_figures(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    code: UnionCode,
    span: SpanDep,
    suppress: bool | None = None,
    format: Format = "json",
) -> Response:
    sup = _suppression(services, actor, suppress)
    return _answer(
        services,
        lambda conn: ls.union_figures(conn, actor, code, *span, suppression=sup),
        format,
        figure_rows,
        f"union-{code}-{span[0]}-{span[1]}",
    )


@router.get("/v1/stats/unions/{code}/series", summary="A union's subtree figures per day")
def union_series(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    code: UnionCode,
    span: SpanDep,
    suppress: bool | None = None,
    format: Format = "json",
) -> Response:
    sup = _suppression(services, actor, suppress)
    return _answer(
        services,
        lambda conn: ls.series(conn, actor, code, *span, suppression=sup),
        format,
        lambda doc: doc["days"],
        f"series-{code}-{span[0]}-{span[1]}",
    )


@router.get("/v1/stats/unions/{code}/statement", summary="A union's daily statement")
def union_statement(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    code: UnionCode,
    day: Day = None,
    format: Format = "json",
) -> Response:
    chosen = _day(day)
    return _answer(
        services,
        lambda conn: ls.union_statement(conn, actor, code, chosen),
        format,
        statement_rows,
        f"statement-{code}-{chosen}",
    )


def statement_rows(doc: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for part in ("subtree", "own"):
        for program, figures in doc[part].items():
            yield {"line": part, "subject": program, **figures}
    for s in doc["stations"]:
        yield {"line": "station", "subject": s["station"], **{f: s[f] for f in vs.FIELDS}}


@router.get("/v1/stats/stations/{station_id}", summary="A station's figures per program")
def station_figures(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    station_id: StationId,
    span: SpanDep,
    suppress: bool | None = None,
    format: Format = "json",
) -> Response:
    sup = _suppression(services, actor, suppress)
    return _answer(
        services,
        lambda conn: ls.station_figures(conn, actor, station_id, *span, suppression=sup),
        format,
        lambda doc: figure_rows({"own": doc["figures"]}, parts=("own",)),
        f"station-{station_id}-{span[0]}-{span[1]}",
    )


@router.get("/v1/stats/stations/{station_id}/statement", summary="A station's daily statement")
def station_statement(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    station_id: StationId,
    day: Day = None,
    format: Format = "json",
) -> Response:
    chosen = _day(day)
    return _answer(
        services,
        lambda conn: ls.station_statement(conn, actor, station_id, chosen),
        format,
        station_rows,
        f"statement-{station_id}-{chosen}",
    )


def station_rows(doc: dict[str, Any]) -> Iterable[dict[str, Any]]:
    blank = {"program": None, "status": None, "reason": None, "entry": None}
    for program, figures in doc["ledger"]["programs"].items():
        yield {**blank, "line": "ledger", "program": program, **figures}
    for d in doc["differences"]:
        yield {
            **blank,
            "line": "difference",
            "program": d["program"],
            "status": d["status"],
            "reason": d["reason"],
            "entry": d["entry"],
            **dict.fromkeys(vs.FIELDS),
            "value": d["value"],
            "quantity": d["quantity"],
        }


@router.get("/v1/stats/settlement", summary="What funding unions owe operating unions")
def settlement(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    span: SpanDep,
    format: Format = "json",
) -> Response:
    return _answer(
        services,
        lambda conn: ls.settlement(conn, actor, *span),
        format,
        lambda doc: doc["pairs"],
        f"settlement-{span[0][:7]}-{span[1][:7]}",
    )


@router.get("/v1/stats/anomalies", summary="Stations and members far above their peers, ...")
def anomalies(
    services: ServicesDep,
    actor: AuditorOrOfficialDep,
    span: SpanDep,
    format: Format = "json",
) -> Response:
    return _answer(
        services,
        lambda conn: {"from": span[0], "to": span[1], "items": ls.anomalies(conn, actor, *span)},
        format,
        lambda doc: doc["items"],
        f"anomalies-{span[0]}-{span[1]}",
    )


@router.get("/v1/stats/export", summary="Every figure, for an auditor's recomputation")
def export(services: ServicesDep, actor: AuditorOrOfficialDep) -> Response:
    if actor.role is not Role.AUDITOR:
        raise Forbidden("the full export is for auditors")
    got = ls.export(services.engine)
    return Response(
        vs.dumps(got.value.to_json(got.root)),
        media_type="application/json",
    )
