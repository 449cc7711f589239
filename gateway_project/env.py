"""Reading settings from the environment, failing fast with a one-line message.

Every reader raises :class:`ConfigError`; settings.py turns it into ``SystemExit`` so a bad
value stops start-up with ``configuration error: NAME: why`` and nothing else.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from core.money import to_nanos


class ConfigError(Exception):
    pass


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def get_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def get_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected a boolean (1/0, true/false, yes/no, on/off), got {value!r}")


def get_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {number}")
    return number


def get_money(name: str, default: int = 0) -> int:
    """An amount of money in the billing currency ("2.50"), returned in nanos; never negative."""
    value = _raw(name)
    if value is None:
        return default
    try:
        nanos = to_nanos(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if nanos < 0:
        raise ConfigError(f"{name}: must not be negative, got {value!r}")
    return nanos


def get_list(name: str, default: list[str] | None = None) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def get_networks(name: str) -> list:
    """A comma-separated list of addresses or CIDR networks (``10.0.0.0/8, ::1``)."""
    import ipaddress

    networks = []
    for item in get_list(name):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an address or a network such as 10.0.0.0/8") from None
    return networks


def get_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = get_str(name, default)
    if value.lower() not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value.lower()


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def get_duration(name: str, default_seconds: int) -> int:
    """Seconds from ``90``, ``90s``, ``15m``, ``24h`` or ``7d``."""
    value = _raw(name)
    if value is None:
        return default_seconds
    unit = value[-1].lower()
    number = value[:-1] if unit in _DURATION_UNITS else value
    try:
        seconds = int(number) * _DURATION_UNITS.get(unit, 1)
    except ValueError:
        raise ConfigError(f"{name}: expected a duration such as 900, 15m, 24h or 7d, got {value!r}") from None
    if seconds <= 0:
        raise ConfigError(f"{name}: must be positive, got {value!r}")
    return seconds


def get_redis_url(name: str) -> str | None:
    value = _raw(name)
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.hostname or parsed.path):
        raise ConfigError(
            f"{name}: expected redis://host:port/db, rediss://... or unix://path, got {value!r}"
        )
    return value


def get_database(name: str, default_sqlite_path: str) -> dict:
    """A Django DATABASES entry from a URL: sqlite:///path or postgres://user:pass@host/db."""
    value = _raw(name)
    if value is None:
        value = f"sqlite:///{default_sqlite_path}"
    parsed = urlparse(value)
    scheme = parsed.scheme
    if scheme == "sqlite":
        # sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory:
        path = value[len("sqlite:///") :] if value.startswith("sqlite:///") else value[len("sqlite://") :]
        path = path or default_sqlite_path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            # a file, not Django's shared in-memory default: the relay's threads and the
            # tests share it, and only a file honours WAL and the busy timeout
            # (per process, so concurrent test runs never share one)
            "TEST": {"NAME": f"{path}.test-{os.getpid()}" if path != ":memory:" else ":memory:"},
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
                ),
            },
        }
    if scheme in ("postgres", "postgresql", "pgsql"):
        if not parsed.path.strip("/"):
            raise ConfigError(
                f"{name}: the PostgreSQL URL names no database (postgres://user:pass@host:5432/dbname)"
            )
        try:
            port = parsed.port or 5432
        except ValueError:
            raise ConfigError(f"{name}: the port in {value!r} is not a number") from None
        from urllib.parse import parse_qs, unquote

        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}  # e.g. ?sslmode=require
        options: dict = {}
        if "sslmode" in query:
            options["sslmode"] = query["sslmode"]
        pool_max = get_int("DB_POOL_MAX", 10, minimum=0)
        if pool_max:
            pool_min = min(get_int("DB_POOL_MIN", 1, minimum=0), pool_max)
            options["pool"] = {"min_size": pool_min, "max_size": pool_max, "timeout": 10}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(port),
            "CONN_MAX_AGE": 0 if pool_max else 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ConfigError(
        f"{name}: unsupported database URL {value!r}; use sqlite:///path/to/db.sqlite3 or "
        "postgres://user:password@host:5432/dbname"
    )
