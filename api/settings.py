"""Settings from the command line and ``UNIONLEDGER_*`` environment variables.

``UNIONLEDGER_DATA_DIR``, ``UNIONLEDGER_DATABASE_URL`` (default: SQLite in the data directory),
``UNIONLEDGER_KEY_PASSPHRASE``, ``UNIONLEDGER_PUBLIC_URL`` (where clients reach the service:
status list URIs name it; default ``http://host:port``). Demo mode may fall back to a
published development passphrase, loudly; production mode refuses to start with it, with none,
or with a short one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ENV_PREFIX = "UNIONLEDGER_"
# Published on purpose: demo data only; production refuses it.
DEV_PASSPHRASE = "unionledger-demo-passphrase-do-not-use-in-production"  # noqa: S105
MIN_PASSPHRASE_LENGTH = 12
DEMO_MARKER = "DEMO"  # a file in a data directory made by --demo; its keys use DEV_PASSPHRASE
# The C2SP checkpoint origin (and note key name): a schema-less URL naming this ledger.
DEFAULT_LOG_ORIGIN = "unionledger.localhost/ledger"


class ConfigError(Exception):
    """The settings are unusable (missing or default secret in production, bad value)."""


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to start. Build with :meth:`load`."""

    data_dir: Path
    database_url: str
    key_passphrase: str | None = field(default=None, repr=False)
    demo: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    log_origin: str = DEFAULT_LOG_ORIGIN
    # Where clients reach this service (status list URIs name it); default http://host:port.
    public_url: str = ""
    # Events per group commit at most (UNIONLEDGER_MAX_BATCH); 1 = a commit per command, the
    # baseline the benchmarks compare with.
    max_batch: int = 2000
    # How long the redeeming station may reverse a redemption by itself (officials: always).
    reversal_window_minutes: int = 30
    # Published statistics withhold counts below this (UNIONLEDGER_STATS_MIN_CELL; 1: none).
    stats_min_cell: int = 5
    # uvicorn's line per request on stderr (UNIONLEDGER_ACCESS_LOG=0: off, e.g. behind a proxy
    # that logs requests; measured, it costs a quarter of a trivial request's CPU).
    access_log: bool = True

    def __post_init__(self) -> None:
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://{self.host}:{self.port}")

    @classmethod
    def load(
        cls,
        *,
        data_dir: str | Path | None = None,
        demo: bool = False,
        host: str | None = None,
        port: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Command-line values win over ``UNIONLEDGER_*`` variables, which win over defaults.

        Raises:
            ConfigError: no data directory given anywhere, or a malformed value.
        """
        env = os.environ if environ is None else environ
        chosen = data_dir or env.get(ENV_PREFIX + "DATA_DIR")
        if not chosen:
            raise ConfigError("no data directory: pass --data-dir or set UNIONLEDGER_DATA_DIR")
        folder = Path(chosen).expanduser().resolve()
        url = env.get(ENV_PREFIX + "DATABASE_URL") or f"sqlite:///{folder / 'unionledger.db'}"
        port_text = str(port) if port is not None else env.get(ENV_PREFIX + "PORT", "8000")
        try:
            port_value = int(port_text)
        except ValueError:
            raise ConfigError(f"port must be a number, got {port_text!r}") from None
        if not 0 < port_value < 65536:
            raise ConfigError(f"port out of range: {port_value}")
        demo = demo or (folder / DEMO_MARKER).exists()
        return cls(
            data_dir=folder,
            database_url=url,
            key_passphrase=env.get(ENV_PREFIX + "KEY_PASSPHRASE") or None,
            demo=demo,
            host=host or env.get(ENV_PREFIX + "HOST", "127.0.0.1"),
            port=port_value,
            log_origin=_origin(env.get(ENV_PREFIX + "LOG_ORIGIN", DEFAULT_LOG_ORIGIN)),
            public_url=_public_url(env.get(ENV_PREFIX + "PUBLIC_URL", "")),
            max_batch=_positive(env.get(ENV_PREFIX + "MAX_BATCH", "2000"), "MAX_BATCH"),
            reversal_window_minutes=_positive(
                env.get(ENV_PREFIX + "REVERSAL_WINDOW_MINUTES", "30"), "REVERSAL_WINDOW_MINUTES"
            ),
            stats_min_cell=_positive(env.get(ENV_PREFIX + "STATS_MIN_CELL", "5"), "STATS_MIN_CELL"),
            access_log=_flag(env.get(ENV_PREFIX + "ACCESS_LOG", "1"), "ACCESS_LOG"),
        )

    def passphrase(self) -> str:
        """The key passphrase to use.

        Demo mode without ``UNIONLEDGER_KEY_PASSPHRASE`` falls back to the development passphrase
        and warns on stderr. Production mode refuses a missing, default or short one.

        Raises:
            ConfigError: production mode without a usable passphrase.
        """
        if self.key_passphrase is None and self.demo:
            warn_once(
                "WARNING: demo mode: using the published development key passphrase. "
                "Anyone can decrypt these keys. Never use this data directory in production."
            )
            return DEV_PASSPHRASE
        if self.key_passphrase is None:
            raise ConfigError(
                "no key passphrase: set UNIONLEDGER_KEY_PASSPHRASE (or use --demo for a demo)"
            )
        if not self.demo:
            if self.key_passphrase == DEV_PASSPHRASE:
                raise ConfigError("refusing to run in production with the development passphrase")
            if len(self.key_passphrase) < MIN_PASSPHRASE_LENGTH:
                raise ConfigError(
                    f"key passphrase too short: at least {MIN_PASSPHRASE_LENGTH} characters"
                )
        return self.key_passphrase


def package_version() -> str:
    """The installed package's version (here, not in api.app: the CLI shows it without
    importing FastAPI and every route)."""
    try:
        return version("unionledger")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _flag(value: str, name: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ENV_PREFIX}{name} must be 1 or 0, got {value!r}")


def _positive(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be a number, got {value!r}") from None
    if number < 1:
        raise ConfigError(f"{ENV_PREFIX}{name} must be at least 1")
    return number


def _public_url(value: str) -> str:
    value = value.rstrip("/")
    if value and not (value.startswith(("http://", "https://")) and " " not in value):
        raise ConfigError(f"public URL must be an http(s) URL: {value!r}")
    return value


def _origin(value: str) -> str:
    if not value or any(c.isspace() or c == "+" for c in value):
        raise ConfigError(f"log origin must be non-empty with no spaces or '+': {value!r}")
    return value


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """:func:`warn`, once per process for the same message."""
    if message not in _warned:
        _warned.add(message)
        warn(message)


def warn(message: str) -> None:
    """A loud line on stderr (settings are read before logging is configured)."""
    print(f"\033[1;33m{message}\033[0m" if sys.stderr.isatty() else message, file=sys.stderr)
