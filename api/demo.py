"""Demo data for ``unionledger serve --demo``: a realistic union tree, a few hundred members
across the groups, a few stations (工会驿站, 司机之家, a mother-and-infant room, a workers'
cultural palace), and one account per role, printed at start.

Everything goes through the same commands as real requests (events on the ledger, personal
data in the vault). Names are synthetic; ID numbers are synthetic with valid checksums; phone
numbers are in the 1380013xxxx block. Seeding runs once: a tree that exists is left alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

import keys
from api.bootstrap import DEMO_STATION, NATIONAL_UNION_CODE, load_provinces
from api.settings import warn
from ledger import programs, stations, unions
from ledger.accounts import PasswordCost, grant_account
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
_DAILY = {day: [["08:00", "20:00"]] for day in stations.DAYS}
_OFFICE = {day: [["08:30", "17:30"]] for day in stations.DAYS[:5]} | {"sat": [], "sun": []}
_PALACE = {day: [["09:00", "21:00"]] for day in stations.DAYS} | {"mon": []}
# (station id, name, kind, operating union, location, lat, lon, hours): places, never people.
# The demo station device (its key in the keyring and, once seeded, on the ledger) is the first.
STATIONS = [
    (DEMO_STATION, "望京街道工会驿站", "union_station", "110105-WJ", "北京市朝阳区望京街道",
     "39.9968", "116.4700", None),
    ("ST-BJ-ZGC-0001", "中关村工会驿站", "union_station", "110108-ZGC", "北京市海淀区中关村",
     "39.9834", "116.3160", _DAILY),
    ("ST-BJ-HOSP-MOM", "医院爱心妈妈小屋", "mother_infant_room", "G-BJ-HOSPITAL",
     "北京市海淀区（医院门诊楼二层）", None, None, _OFFICE),
    ("ST-SH-ZJ-0001", "张江镇工会驿站", "union_station", "310115-ZJ", "上海市浦东新区张江镇",
     "31.2040", "121.5900", _DAILY),
    ("ST-GZ-TRUCK-01", "天河货车司机之家", "truck_driver_home", "G-GZ-TRUCKS",
     "广州市天河区（物流园区）", "23.1500", "113.3600", None),
    ("ST-GZ-PALACE", "广州市工人文化宫", "cultural_palace", "440100", "广州市越秀区",
     "23.1250", "113.2700", _PALACE),
]  # fmt: skip

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
    stations: int = 0
    station_key_on_ledger: bool = False  # the demo station's keyring key is registered too
    programs: int = 0
    redemptions: int = 0
    reversals: int = 0


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def seed(
    engine: Engine,
    sequencer: Sequencer,
    members: Members,
    keyring: keys.Keyring | None = None,
) -> DemoSummary | None:
    """Seed the demo once; None when it is seeded already (a member exists). The unions that
    exist already (``unionledger init --demo`` makes the national and provincial federations)
    are kept, the others made. With ``keyring``, the demo station's device keys found there
    (role ``station``, scope :data:`DEMO_STATION`) are also registered on the ledger, as an
    official registers a real device's public key."""
    from ledger.members import members as member_rows  # noqa: PLC0415

    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(member_rows)).scalar_one():
            return None
        existing = set(conn.execute(select(unions.unions.c.code)).scalars())
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
    wanted = [NATIONAL_UNION_CODE, *(code for code, _ in provinces), *(u[0] for u in LOCAL_UNIONS)]
    commands = [c for code, c in zip(wanted, commands, strict=True) if code not in existing]
    for created in [sequencer.submit(c) for c in commands]:
        created.result()

    futures: list[Future[MemberRow]] = []
    enrolled_groups: list[list[str]] = []
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
            enrolled_groups.append(chosen)
            futures.append(sequencer.submit(_enrol(members, union_code, person, chosen)))
    enrolled_rows = [enrolled.result() for enrolled in futures]
    device_keys = _demo_device_keys(keyring)
    sequencer.execute(lambda tx: _stations(tx, device_keys))
    demo_programs = programs_for(datetime.now(programs.CHINA).date())
    sequencer.execute(lambda tx: _programs(tx, demo_programs))

    sequencer.execute(_accounts)
    redeemed = reversed_ = 0
    if keyring is not None:  # credentials need the issuer keys of the keyring
        # The first member is the one the banner names: left untouched, every benefit open.
        redeemed, reversed_ = _redemptions(
            engine,
            sequencer,
            members=members,
            keyring=keyring,
            enrolled=list(zip(enrolled_rows, enrolled_groups, strict=True))[1:],
            rng=rng,
        )
    sequencer.checkpoint()
    return DemoSummary(
        unions=len(commands),
        members=len(futures),
        member_phone=first_phone,
        stations=len(STATIONS),
        station_key_on_ledger=bool(device_keys),
        programs=len(demo_programs),
        redemptions=redeemed,
        reversals=reversed_,
    )


def programs_for(today: date) -> list[tuple[str, str, dict[str, Any]]]:
    """The demo's programs (id, owner, rules), open around ``today`` so that the demo always has
    something to redeem: the national summer cooling pack (with allocations to two provinces and
    a Beijing top-up that does not stack with it), a welcome pack for new-employment-form
    workers, union-station services at no cost, a spring-festival gift for workers in hardship
    and a truck-driver-home shower."""
    season = {
        "from": (today - timedelta(days=30)).isoformat(),
        "until": (today + timedelta(days=90)).isoformat(),
    }
    everywhere = ["union_station", "truck_driver_home", "cultural_palace"]
    return [
        ("NAT-SONGQINGLIANG", NATIONAL_UNION_CODE, {
            "name": "送清凉（防暑降温慰问包）", "kind": "universal", "period": season,
            "quota": {"count": 1, "per": "program"}, "unit_value": 5000,
            "budget": 1_000_000_00, "allocations": {"110000": 20_000_00, "440000": 30_000_00},
            "where": {"station_kinds": everywhere},
            "offline": {"allowed": True, "per_member_per_day": 1, "station_daily_value": 50_000},
        }),
        ("BJ-SONGQINGLIANG", "110000", {
            "name": "北京市总工会送清凉（不与全总送清凉叠加）", "kind": "universal",
            "period": season, "quota": {"count": 1, "per": "program"}, "unit_value": 3000,
            "budget": 5_000_00, "no_stack_with": ["NAT-SONGQINGLIANG"],
        }),
        ("GD-NUANXIN", "440000", {
            "name": "暖新礼包（新就业形态劳动者）", "kind": "targeted",
            "eligibility": {"groups_any": [
                "delivery_rider", "courier", "ride_hailing_driver", "truck_driver"]},
            "period": season, "quota": {"count": 1, "per": "program"}, "unit_value": 10000,
            "budget": 2_000_000,
        }),
        ("NAT-YIZHAN-WATER", NATIONAL_UNION_CODE, {
            "name": "工会驿站：饮水、休息", "kind": "universal", "period": season,
            "quota": {"count": 5, "per": "day"}, "unit_value": 0,
            "where": {"station_kinds": ["union_station"]},
            "offline": {"allowed": True, "per_member_per_day": 5, "station_daily_value": 0},
        }),
        ("NAT-YIZHAN-CHARGE", NATIONAL_UNION_CODE, {
            "name": "工会驿站：手机、电动车充电", "kind": "universal", "period": season,
            "quota": {"count": 2, "per": "day"}, "unit_value": 0,
            "where": {"station_kinds": ["union_station"]},
        }),
        ("NAT-SONGWENNUAN", NATIONAL_UNION_CODE, {
            "name": "春节送温暖（困难职工慰问）", "kind": "targeted",
            "eligibility": {"groups_any": ["hardship"]}, "period": season,
            "quota": {"count": 1, "per": "program"}, "unit_value": 50000, "budget": 50_000_000,
        }),
        ("GD-SIJI-SHOWER", "440000", {
            "name": "司机之家：热水淋浴", "kind": "universal", "period": season,
            "quota": {"count": 1, "per": "day"}, "unit_value": 0,
            "where": {"station_kinds": ["truck_driver_home"]},
        }),
    ]  # fmt: skip


# Where the members of each grassroots union go: (station for the station services, station for
# the big packs). The first station of each pair is a union station (water and charging) or the
# truck-driver home (showers).
HAUNTS = {
    "G-BJ-RIDERS": (DEMO_STATION, DEMO_STATION),
    "G-BJ-EXPRESS": (DEMO_STATION, DEMO_STATION),
    "G-BJ-HOSPITAL": ("ST-BJ-ZGC-0001", "ST-BJ-HOSP-MOM"),
    "G-SH-LOGISTICS": ("ST-SH-ZJ-0001", "ST-SH-ZJ-0001"),
    "G-SH-FACTORY": ("ST-SH-ZJ-0001", "ST-SH-ZJ-0001"),
    "G-GZ-RIDERS": (None, "ST-GZ-PALACE"),
    "G-GZ-DRIVERS": (None, "ST-GZ-PALACE"),
    "G-GZ-TRUCKS": ("ST-GZ-TRUCK-01", "ST-GZ-TRUCK-01"),
}
NEW_FORMS = {"delivery_rider", "courier", "ride_hailing_driver", "truck_driver"}
REDEEMING_MEMBERS = 70  # of the demo's members, the ones who come to a station
REVERSALS = 3


def _visits(rng: random.Random, union_code: str, groups: frozenset[str]) -> list[tuple[str, str]]:
    """What one member redeems, and where: (station, program) in order."""
    services_at, packs_at = HAUNTS[union_code]
    out: list[tuple[str, str]] = []
    if rng.random() < 0.6:
        if union_code.startswith("G-BJ") and (packs_at == "ST-BJ-HOSP-MOM" or rng.random() < 0.25):
            out.append((packs_at, "BJ-SONGQINGLIANG"))  # does not stack with the national one
        else:
            station = DEMO_STATION if packs_at == "ST-BJ-HOSP-MOM" else packs_at
            out.append((station, "NAT-SONGQINGLIANG"))
    if union_code.startswith("G-GZ") and groups & NEW_FORMS and rng.random() < 0.6:
        out.append((packs_at, "GD-NUANXIN"))
    if "hardship" in groups and rng.random() < 0.7:
        out.append((packs_at, "NAT-SONGWENNUAN"))
    if services_at == "ST-GZ-TRUCK-01":
        if rng.random() < 0.7:
            out.append((services_at, "GD-SIJI-SHOWER"))
    elif services_at is not None:
        out += [(services_at, "NAT-YIZHAN-WATER")] * rng.choice((0, 1, 1, 2, 3))
        out += [(services_at, "NAT-YIZHAN-CHARGE")] * rng.choice((0, 0, 1))
    return out


def _redemptions(
    engine: Engine,
    sequencer: Sequencer,
    *,
    members: Members,
    keyring: keys.Keyring,
    enrolled: list[tuple[MemberRow, list[str]]],
    rng: random.Random,
) -> tuple[int, int]:
    """Some members get a credential (a Python wallet, as ``unionledger member qr`` makes) and
    redeem at the stations near them through the real commands: each QR presentation verified
    as ``POST /v1/redemptions`` verifies it, then recorded by the sequencer. A few redemptions
    are then reversed. Returns (redemptions, reversals)."""
    from ledger.credentials import Credentials  # noqa: PLC0415
    from ledger.domain import Actor, DomainError, Role  # noqa: PLC0415
    from ledger.redemptions import Redemptions  # noqa: PLC0415
    from verifier.credential import verify_presentation  # noqa: PLC0415
    from verifier.errors import CredentialError  # noqa: PLC0415
    from verifier.wallet import Wallet  # noqa: PLC0415

    credentials = Credentials(keyring, members)
    redeeming = rng.sample(enrolled, min(REDEEMING_MEMBERS, len(enrolled)))
    holders = [keys.PrivateKey.generate() for _ in redeeming]
    issuing = [
        sequencer.submit(
            partial(credentials.issue, actor=SYSTEM, member_id=row.member_id, holder=h.public_key)
        )
        for (row, _), h in zip(redeeming, holders, strict=True)
    ]
    wallets = [
        Wallet(holder, issued.token, dict(issued.disclosures))
        for holder, issued in zip(holders, (f.result() for f in issuing), strict=True)
    ]
    now = keys.utc_now()
    with engine.connect() as conn:
        trust, lists = credentials.verification_material(
            conn, lambda issuer: f"demo:/v1/status-lists/{issuer}", now, fresh=True
        )
        # The latest version of each (made a moment ago: maybe "after" now, to the second).
        wanted: dict[str, programs.Version] = {}
        for pid, _, _ in programs_for(datetime.now(programs.CHINA).date()):
            history = programs.versions(conn, pid)
            if history:
                wanted[pid] = history[-1]
    service = Redemptions(members)
    pending = []
    for (row, _), wallet in zip(redeeming, wallets, strict=True):
        for n, (station, program) in enumerate(_visits(rng, row.union_code, wallet.groups)):
            version = wanted.get(program)
            if version is None:
                continue
            challenge = rng.randbytes(16)
            text = wallet.presentation(version.rules.groups_any, now, challenge)
            try:
                verified = verify_presentation(
                    text, trust_list=trust, status_lists=lists, now=now, challenge=challenge
                )
            except CredentialError as e:
                warn(f"demo: a presentation did not verify ({e}); skipped")
                continue
            actor = Actor(Role.STATION, station, station)
            pending.append(
                sequencer.submit(
                    partial(
                        service.redeem,
                        station=actor,
                        verified=verified,
                        program=program,
                        quantity=1,
                        key=f"demo-{row.member_id}-{n}",
                    )
                )
            )
    done = []
    for future in pending:
        try:
            done.append(future.result())
        except DomainError:  # a rule said no (the demo's plan is rough): not recorded
            continue
    valued = [d.row.redemption for d in done if d.row.value]
    undone = 0
    for redemption in rng.sample(valued, min(REVERSALS, len(valued))):
        sequencer.execute(
            partial(
                service.reverse,
                actor=SYSTEM,
                redemption=redemption,
                reason="演示：发放有误，已收回（demo: handed out by mistake）",
            )
        )
        undone += 1
    return len(done), undone


def _accounts(tx: Tx) -> None:
    """The demo's logins, granted on the ledger as ``unionledger accounts add`` does."""
    for username, (role, scope, password) in DEMO_PASSWORDS.items():
        grant_account(
            tx,
            SYSTEM,
            username=username,
            password=password,
            role=role,
            scope=scope,
            cost=PasswordCost(),
        )


def _programs(tx: Tx, demo_programs: list[tuple[str, str, dict[str, Any]]]) -> None:
    for program, owner, rules in demo_programs:
        programs.create_program(tx, SYSTEM, program=program, owner=owner, rules=rules)


def _demo_device_keys(keyring: keys.Keyring | None) -> list[keys.PublicKey]:
    if keyring is None:
        return []
    now = keys.utc_now()
    return [
        r.public_key for r in keyring.of_role(keys.Role.STATION, DEMO_STATION) if r.is_valid_at(now)
    ]


def _stations(tx: Tx, device_keys: list[keys.PublicKey]) -> None:
    for station, name, kind, union, location, lat, lon, hours in STATIONS:
        stations.register_station(
            tx,
            SYSTEM,
            station=station,
            name=name,
            kind=kind,
            union=union,
            location=location,
            lat=lat,
            lon=lon,
            hours=hours,
        )
    for public in device_keys:
        stations.register_station_key(tx, SYSTEM, station=DEMO_STATION, jwk=public)


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
        lines.append(
            f"Seeded {summary.unions} unions, {summary.members} members, "
            f"{summary.stations} stations, {summary.programs} programs and "
            f"{summary.redemptions} redemptions ({summary.reversals} reversed)."
        )
    where = "in the keyring"
    if summary is not None and summary.station_key_on_ledger:
        where += " and registered on the ledger"
    lines.append(
        f"  station  {DEMO_STATION}: device key (Ed25519 seed, hex) in {station_key_file}, its "
        f"public key {where}; log in by signing the challenge of "
        "POST /v1/auth/station/challenge"
    )
    return "\n".join(lines)
