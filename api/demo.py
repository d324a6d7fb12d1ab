"""Demo data for ``unionledger serve --demo``: a realistic union tree, a few hundred members
across the groups, and one account per role, printed at start.

Everything goes through the same commands as real requests (events on the ledger, personal
data in the vault). Names are synthetic; ID numbers are synthetic with valid checksums; phone
numbers are in the 1380013xxxx block. Seeding runs once: a tree that exists is left alone.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select

from api.bootstrap import DEMO_STATION, NATIONAL_UNION_CODE, load_provinces
from api.settings import warn
from ledger import unions
from ledger.accounts import PasswordCost, create_account
from ledger.domain import SYSTEM
from ledger.identity import synthetic_id_number
from ledger.members import MemberRow, Members
from ledger.sequencer import Sequencer, Tx
from ledger.vault import PersonalData

# (code, name, kind, parent): below the 31 provincial federations.
LOCAL_UNIONS = [
    ("110105", "北京市朝阳区总工会", "county", "110000"),
    ("110108", "北京市海淀区总工会", "county", "110000"),
    ("110105-WJ", "朝阳区望京街道总工会", "township", "110105"),
    ("110108-ZGC", "中关村科技园区海淀园工会联合会", "township", "110108"),
    ("G-BJ-RIDERS", "某外卖平台北京站点骑手工会", "enterprise", "110105-WJ"),
    ("G-BJ-EXPRESS", "某快递公司望京分部工会", "enterprise", "110105-WJ"),
    ("G-BJ-HOSPITAL", "某三甲医院工会", "enterprise", "110108-ZGC"),
    ("310115", "上海市浦东新区总工会", "county", "310000"),
    ("310115-ZJ", "浦东新区张江镇总工会", "township", "310115"),
    ("G-SH-LOGISTICS", "某物流公司上海分公司工会", "enterprise", "310115-ZJ"),
    ("G-SH-FACTORY", "某汽车零部件厂工会", "enterprise", "310115-ZJ"),
    ("440100", "广州市总工会", "city", "440000"),
    ("440106", "广州市天河区总工会", "county", "440100"),
    ("440106-SP", "天河区石牌街道总工会", "township", "440106"),
    ("G-GZ-RIDERS", "某即时配送平台广州骑手工会", "industry", "440106-SP"),
    ("G-GZ-DRIVERS", "天河区网约车司机行业工会", "industry", "440106-SP"),
    ("G-GZ-TRUCKS", "广州货车司机之家联合工会", "regional", "440106"),
]

# grassroots union -> (how many members, region code for their ID numbers, typical groups)
MEMBERSHIP = {
    "G-BJ-RIDERS": (70, "110105", ["delivery_rider", "migrant_worker"]),
    "G-BJ-EXPRESS": (40, "110105", ["courier", "migrant_worker"]),
    "G-BJ-HOSPITAL": (30, "110108", ["female_worker"]),
    "G-SH-LOGISTICS": (40, "310115", ["courier", "truck_driver"]),
    "G-SH-FACTORY": (30, "310115", []),
    "G-GZ-RIDERS": (50, "440106", ["delivery_rider", "migrant_worker"]),
    "G-GZ-DRIVERS": (25, "440106", ["ride_hailing_driver"]),
    "G-GZ-TRUCKS": (25, "440106", ["truck_driver"]),
}
EMPLOYERS = {
    "G-BJ-RIDERS": "某外卖平台（北京）",
    "G-BJ-EXPRESS": "某快递公司",
    "G-BJ-HOSPITAL": "某三甲医院",
    "G-SH-LOGISTICS": "某物流公司",
    "G-SH-FACTORY": "某汽车零部件厂",
    "G-GZ-RIDERS": "某即时配送平台",
    "G-GZ-DRIVERS": "某网约车平台",
    "G-GZ-TRUCKS": "个体货运",
}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂兰华红"

DEMO_PASSWORDS = {
    "official-national": ("official", NATIONAL_UNION_CODE, "demo-national-2026"),
    "official-beijing": ("official", "110000", "demo-beijing-2026"),
    "official-wangjing": ("official", "110105-WJ", "demo-wangjing-2026"),
    "auditor": ("auditor", None, "demo-auditor-2026"),
}


@dataclass(frozen=True)
class DemoSummary:
    unions: int
    members: int
    member_phone: str | None


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def seed(engine: Engine, sequencer: Sequencer, members: Members) -> DemoSummary | None:
    """Seed the demo once; None when the tree already exists."""
    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(unions.unions)).scalar_one():
            return None
    rng = random.Random(2026)  # noqa: S311  (reproducible synthetic data, not secrets)

    def create(code: str, name: str, kind: str, parent: str | None) -> Callable[[Tx], object]:
        return lambda tx: unions.create_union(
            tx,
            SYSTEM,
            code=code,
            name=name,
            kind=kind,
            parent=parent,
            auto_approve=code.startswith("G-GZ"),
        )

    commands = [create(NATIONAL_UNION_CODE, "中华全国总工会", "national", None)]
    try:
        provinces = [(p.code, p.federation_zh) for p in load_provinces()]
    except FileNotFoundError:  # no shared reference data here: the provinces the demo uses
        warn("demo: shared/data/provinces.csv not found; seeding three provinces only")
        provinces = [
            ("110000", "北京市总工会"),
            ("310000", "上海市总工会"),
            ("440000", "广东省总工会"),
        ]
    commands += [create(code, name, "provincial", NATIONAL_UNION_CODE) for code, name in provinces]
    commands += [create(*u) for u in LOCAL_UNIONS]
    for created in [sequencer.submit(c) for c in commands]:
        created.result()

    futures: list[Future[MemberRow]] = []
    first_phone = None
    serial = 0
    for union_code, (count, region, usual) in MEMBERSHIP.items():
        for _ in range(count):
            serial += 1
            phone = f"1380013{serial:04d}"
            first_phone = first_phone or phone
            person = PersonalData(
                name=_name(rng),
                id_number=synthetic_id_number(rng, region=region),
                phone=phone,
                employer=EMPLOYERS[union_code],
            )
            groups = [g for g in usual if rng.random() < 0.85]
            if rng.random() < 0.35:
                groups.append("female_worker")
            if rng.random() < 0.06:
                groups.append("hardship")
            if rng.random() < 0.04:
                groups.append("model_worker")
            if rng.random() < 0.05:
                groups.append("over_age_worker")
            chosen = sorted(set(groups))
            futures.append(sequencer.submit(_enrol(members, union_code, person, chosen)))
    for enrolled in futures:
        enrolled.result()

    with engine.begin() as conn:
        now = int(time.time())
        for username, (role, scope, password) in DEMO_PASSWORDS.items():
            create_account(
                conn,
                username=username,
                password=password,
                role=role,
                scope=scope,
                now=now,
                cost=PasswordCost(),
            )
    sequencer.checkpoint()
    return DemoSummary(unions=len(commands), members=len(futures), member_phone=first_phone)


def _enrol(
    members: Members, union_code: str, person: PersonalData, groups: list[str]
) -> Callable[[Tx], MemberRow]:
    return lambda tx: members.enrol(tx, SYSTEM, union_code=union_code, person=person, groups=groups)


def banner(summary: DemoSummary | None, station_key_file: Path) -> str:
    lines = ["Demo accounts (published: demo only):"]
    for username, (role, scope, password) in DEMO_PASSWORDS.items():
        where = f" scope {scope}" if scope else ""
        lines.append(f"  {role:<8} {username:<18} password {password}{where}")
    if summary is not None:
        lines.append(
            f"  member   phone {summary.member_phone}: ask for a one-time code; the development "
            "sink prints it in this log"
        )
        lines.append(f"Seeded {summary.unions} unions and {summary.members} members.")
    lines.append(
        f"  station  {DEMO_STATION}: device key (Ed25519 seed, hex) in {station_key_file}; log in "
        "by signing the challenge of POST /v1/auth/station/challenge"
    )
    return "\n".join(lines)
