"""``unionledger stats show|statement|settlement|anomalies|recompute`` (docs/stats.md section 6).

The figures come from a data directory (``--data-dir``: the operator on the server, who sees
everything; counts below ``UNIONLEDGER_STATS_MIN_CELL`` are withheld unless ``--all``) or from a
server (``--server URL`` with an official's or auditor's access token in ``--token`` or
``$UNIONLEDGER_TOKEN``: that account's view). Output: an aligned table, or ``--format csv|json``.

``recompute SOURCE`` is the auditor's proof: it verifies the chain behind SOURCE (a server URL or
an export file) against the log's public key, rebuilds every figure from the entries alone with
verifier/ code, and compares with the figures the server publishes (``GET /v1/stats/export``,
or ``--figures FILE``).

Exit status: 0 success (recompute: identical); 1 recompute found differences or the chain does
not verify; 2 usage, a refused request or an unreachable server; 5 unusable settings.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from api.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
FEN_FIELDS = frozenset(
    {"value", "offline_value", "reversed_value", "conflict_value", "owed", "net"}
)


class StatsCliError(Exception):
    """A usage or request error: printed on one line, exit 2."""


# -- where the figures come from -----------------------------------------------------------------


def _local(args: argparse.Namespace, read: Callable[[Any, Any], Any]) -> dict[str, Any]:
    from ledger import stats as ls  # noqa: PLC0415
    from ledger.db import make_engine  # noqa: PLC0415
    from ledger.domain import SYSTEM, DomainError  # noqa: PLC0415

    settings = Settings.load(data_dir=args.data_dir)
    sup = ls.NO_SUPPRESSION if args.all else ls.Suppression(settings.stats_min_cell)
    engine = make_engine(settings.database_url)
    try:
        got = ls.pinned(engine, lambda conn: read(conn, (SYSTEM, sup)))
    except DomainError as e:
        raise StatsCliError(str(e)) from e
    finally:
        engine.dispose()
    doc = got.value if isinstance(got.value, dict) else {"items": got.value}
    return {**doc, "pinned": got.pin()}


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("UNIONLEDGER_TOKEN")
    if not token:
        raise StatsCliError("--server needs an access token: --token or $UNIONLEDGER_TOKEN")
    return str(token)


def _get(server: str, path: str, params: dict[str, Any], token: str, timeout: float) -> Any:
    import httpx  # noqa: PLC0415

    try:
        answer = httpx.get(
            server.rstrip("/") + path,
            params={k: v for k, v in params.items() if v is not None},
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
    except httpx.HTTPError as e:
        raise StatsCliError(f"{server}: {e}") from e
    if answer.status_code != 200:
        try:
            problem = answer.json()
            detail = f"{problem.get('title', '')}: {problem.get('detail', '')}"
        except ValueError:
            detail = answer.text[:200]
        raise StatsCliError(f"GET {path}: HTTP {answer.status_code} {detail}")
    return answer.json()


def _fetch(
    args: argparse.Namespace,
    path: str,
    params: dict[str, Any],
    read: Callable[[Any, Any], Any],
) -> dict[str, Any]:
    if args.server:
        doc: dict[str, Any] = _get(args.server, path, params, _token(args), args.timeout)
        return doc
    return _local(args, read)


# -- output ----------------------------------------------------------------------------------


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in FEN_FIELDS and isinstance(value, int):
        return f"{value / 100:,.2f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """An aligned text table (numbers right-aligned; fen shown as yuan)."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [[_cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(_width(c), *(_width(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), int | float | None) for r in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        out = []
        for i, v in enumerate(values):
            pad = " " * (widths[i] - _width(v))
            out.append(pad + v if numeric[i] else v + pad)
        return "  ".join(out).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _emit(args: argparse.Namespace, doc: dict[str, Any], rows: Iterable[dict[str, Any]]) -> None:
    if args.format == "json":
        print(json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True))
        return
    listed = list(rows)
    if args.format == "csv":
        out = io.StringIO()
        if listed:
            writer = csv.DictWriter(out, fieldnames=list(listed[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in listed)
        sys.stdout.write(out.getvalue())
        return
    pinned = doc.get("pinned", {})
    print(table(listed))
    print(f"(ledger size {pinned.get('size')}, root {pinned.get('root')}; value in yuan)")


# -- commands --------------------------------------------------------------------------------


def _range_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"from": args.start, "to": args.end}


def _span(args: argparse.Namespace) -> tuple[str, str]:
    from ledger import stats as ls  # noqa: PLC0415
    from ledger.domain import DomainError  # noqa: PLC0415

    try:
        return ls.parse_range(args.start, args.end)
    except DomainError as e:
        raise StatsCliError(str(e)) from e


def cmd_show(args: argparse.Namespace) -> int:
    from api.routes_stats import figure_rows  # noqa: PLC0415
    from ledger import stats as ls  # noqa: PLC0415

    def read(conn: Any, view: Any) -> Any:
        actor, sup = view
        return ls.union_figures(conn, actor, args.union, *_span(args), suppression=sup)

    params = {**_range_params(args), "suppress": None}
    doc = _fetch(args, f"/v1/stats/unions/{args.union}", params, read)
    rows = [
        {k: v for k, v in r.items() if k != "suppressed"}
        for r in figure_rows(doc)
        if args.format != "table" or r.get("redemptions") != 0 or r["program"] == "*"
    ]
    _emit(args, doc, rows)
    return EXIT_OK


def cmd_statement(args: argparse.Namespace) -> int:
    from api.routes_stats import statement_rows, station_rows  # noqa: PLC0415
    from ledger import stats as ls  # noqa: PLC0415

    day = _span(argparse.Namespace(start=args.day, end=args.day))[0] if args.day else None
    if args.station:

        def read_station(conn: Any, view: Any) -> Any:
            chosen = day or _span(argparse.Namespace(start=None, end=None))[1]
            return ls.station_statement(conn, view[0], args.station, chosen)

        doc = _fetch(
            args, f"/v1/stats/stations/{args.station}/statement", {"day": day}, read_station
        )
        _emit(args, doc, station_rows(doc))
    else:

        def read_union(conn: Any, view: Any) -> Any:
            chosen = day or _span(argparse.Namespace(start=None, end=None))[1]
            return ls.union_statement(conn, view[0], args.union, chosen)

        doc = _fetch(args, f"/v1/stats/unions/{args.union}/statement", {"day": day}, read_union)
        _emit(args, doc, statement_rows(doc))
    return EXIT_OK


def cmd_settlement(args: argparse.Namespace) -> int:
    from ledger import stats as ls  # noqa: PLC0415

    doc = _fetch(
        args,
        "/v1/stats/settlement",
        _range_params(args),
        lambda conn, view: ls.settlement(conn, view[0], *_span(args)),
    )
    _emit(args, doc, doc["pairs"])
    if args.format == "table":
        print(f"balances net to {doc['net_total'] / 100:,.2f}")
    return EXIT_OK


def cmd_anomalies(args: argparse.Namespace) -> int:
    from ledger import stats as ls  # noqa: PLC0415

    def read(conn: Any, view: Any) -> Any:
        span = _span(args)
        return {"from": span[0], "to": span[1], "items": ls.anomalies(conn, view[0], *span)}

    doc = _fetch(args, "/v1/stats/anomalies", _range_params(args), read)
    _emit(args, doc, doc["items"])
    return EXIT_OK


def cmd_recompute(args: argparse.Namespace) -> int:
    from api.cli import _note_verifier, _progress  # noqa: PLC0415
    from verifier import stats as vs  # noqa: PLC0415
    from verifier.audit import AuditFailure, ExportSource, HttpSource, LogSource, SourceError  # noqa: PLC0415
    from verifier.errors import NoteError  # noqa: PLC0415

    try:
        verifier = _note_verifier(args.public_key)
    except NoteError as e:
        raise StatsCliError(f"--public-key: {e}") from e
    remote = args.source.startswith(("http://", "https://"))
    if args.figures:
        try:
            doc = json.loads(Path(args.figures).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StatsCliError(f"{args.figures}: {e}") from e
    elif remote:
        doc = _get(args.source, "/v1/stats/export", {}, _token(args), args.timeout)
    else:
        raise StatsCliError("an export file as SOURCE needs --figures FILE")
    try:
        published = vs.Figures.from_json(doc)
        root = base64.b64decode(doc["root"], validate=True) if "root" in doc else None
    except (ValueError, KeyError) as e:
        raise StatsCliError(f"the published figures: {e}") from e
    source: LogSource = HttpSource(args.source) if remote else ExportSource(args.source)
    try:
        outcome = vs.recompute_from(
            source,
            verifier,
            published,
            root,
            origin=args.origin,
            progress=_progress("recompute"),
        )
    except AuditFailure as e:
        where = f" (first bad entry: {e.index})" if e.index is not None else ""
        print(f"FAILED: the chain does not verify{where}: {e.reason}")
        return EXIT_FAILED
    except SourceError as e:
        raise StatsCliError(str(e)) from e
    finally:
        if isinstance(source, ExportSource):
            source.close()
    if outcome.differences:
        print(f"DIFFERENT: the published figures do not match the chain ({published.size} entries)")
        for line in outcome.differences:
            print(f"  {line}")
        return EXIT_FAILED
    print(
        f"identical: {len(published.cells)} cells, {len(published.members)} member counts and "
        f"{len(published.budgets)} budgets recomputed from {published.size} entries "
        f"(chain verified to its signed checkpoint at size {outcome.verified_size})"
    )
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except StatsCliError as e:
            print(f"unionledger: error: {e}", file=sys.stderr)
            return EXIT_USAGE

    return run


def add_stats_commands(stats_cmd: argparse.ArgumentParser) -> None:
    stats_cmd.description = (
        "Statistics and reconciliation. Exit status: 0 success (recompute: identical); 1"
        " recompute found differences or the chain does not verify; 2 usage, refused or"
        " unreachable; 5 settings."
    )
    ssub = stats_cmd.add_subparsers(dest="stats_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, *, dates: bool = True) -> None:
        where = p.add_mutually_exclusive_group()
        where.add_argument("--data-dir", help="read a local data directory (the operator)")
        where.add_argument("--server", help="read a server, http(s)://... (needs a token)")
        p.add_argument("--token", help="an access token (default: $UNIONLEDGER_TOKEN)")
        p.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout, seconds")
        p.add_argument("--format", choices=("table", "csv", "json"), default="table")
        p.add_argument("--all", action="store_true", help="local: do not withhold small counts")
        if dates:
            p.add_argument("--from", dest="start", help="first China date, YYYY-MM-DD")
            p.add_argument("--to", dest="end", help="last China date (default: today)")

    k = ssub.add_parser("show", help="a union's own and subtree figures per program")
    common(k)
    k.add_argument("union", metavar="UNION")
    k.set_defaults(func=_guarded(cmd_show))

    k = ssub.add_parser("statement", help="a union's or a station's daily statement")
    common(k, dates=False)
    which = k.add_mutually_exclusive_group(required=True)
    which.add_argument("--union")
    which.add_argument("--station")
    k.add_argument("--day", help="China date, YYYY-MM-DD (default: today)")
    k.set_defaults(func=_guarded(cmd_statement))

    k = ssub.add_parser("settlement", help="what funding unions owe operating unions")
    common(k)
    k.set_defaults(func=_guarded(cmd_settlement))

    k = ssub.add_parser("anomalies", help="stations and members far above peers, bursts, ...")
    common(k)
    k.set_defaults(func=_guarded(cmd_anomalies))

    k = ssub.add_parser(
        "recompute",
        help="rebuild every figure from the verified chain and compare with the published ones",
        description="Exit status: 0 identical; 1 differences (the first are listed) or the chain"
        " does not verify; 2 usage or I/O error.",
    )
    k.add_argument("source", metavar="SOURCE", help="http(s)://server or an export file")
    k.add_argument(
        "--public-key",
        required=True,
        help="the log's note verifier key <name>+<hex id>+<base64 key>, or a file holding it",
    )
    k.add_argument("--origin", help="the log origin to expect (default: the key's name)")
    k.add_argument("--figures", help="the published figures (GET /v1/stats/export), a file")
    k.add_argument("--token", help="an auditor's access token (default: $UNIONLEDGER_TOKEN)")
    k.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout, seconds")
    k.set_defaults(func=_guarded(cmd_recompute))
