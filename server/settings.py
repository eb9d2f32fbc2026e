"""Fairwatch settings: one frozen Struct, built once from ``FAIRWATCH_*`` variables and passed in.

Nothing reads the environment at import time; ``load_settings(os.environ)`` is called by the CLI
(and by tests with a plain dict), so a bad value fails start-up with one line naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

__all__ = ["Environment", "S3Settings", "Settings", "SettingsError", "load_settings"]


class SettingsError(Exception):
    """A configuration value is missing or invalid; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class S3Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: str  # host[:port], as the minio client wants it
    access_key: str
    secret_key: str = msgspec.field()
    bucket: str = "fairwatch"
    secure: bool = True
    region: str | None = None

    def __repr__(self) -> str:  # never print the secret key
        return f"S3Settings(endpoint={self.endpoint!r}, bucket={self.bucket!r})"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    environment: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var")
    database_url: str | None = None  # None: the embedded PostgreSQL under data_dir
    db_pool_min: int = 2
    db_pool_max: int = 10
    s3: S3Settings | None = None  # None: the local blob store under data_dir
    secret_key: str = ""  # empty in development: generated once into data_dir/secret.key
    master_key: str | None = None  # base64 of 32 bytes
    master_key_file: Path | None = None
    previous_master_keys: tuple[str, ...] = ()
    max_body_bytes: int = 10 * 1024 * 1024
    session_ttl_hours: int = 12
    log_level: str = "INFO"
    log_json: bool = True
    create_demo: bool = True
    worker_poll_seconds: float = 1.0
    # Requests per minute (sustained) per device, per staff member, per address without login;
    # 0 turns a limit off. Bursts are a quarter of a minute's allowance (at least 10).
    rate_device_per_minute: int = 120
    rate_staff_per_minute: int = 600
    rate_anonymous_per_minute: int = 30

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def __repr__(self) -> str:  # keep secrets and passwords in URLs out of logs and tracebacks
        db = _redact_url(self.database_url) if self.database_url else "embedded"
        return f"Settings(environment={self.environment}, database={db}, s3={self.s3!r})"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def generated_master_key_file(self) -> Path | None:
        """Where development generates a master key; None when one is configured."""
        if self.master_key or self.master_key_file:
            return None
        return self.data_dir / "master.key"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(name, f"expected true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(name, f"must be between {low} and {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"expected a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(name, f"must be between {low} and {high}, got {value}")
    return value


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def _database_url(env: Mapping[str, str]) -> str | None:
    name = "FAIRWATCH_DATABASE_URL"
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise SettingsError(name, f"not a valid URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise SettingsError(name, "must start with postgresql:// (e.g. postgresql://user@host/db)")
    if not parts.netloc and "host=" not in parts.query:
        raise SettingsError(name, "has no host (e.g. postgresql://user@127.0.0.1:5432/fairwatch)")
    return raw


def _s3(env: Mapping[str, str], production: bool) -> S3Settings | None:
    raw = env.get("FAIRWATCH_S3_ENDPOINT", "").strip()
    if not raw:
        return None
    secure = _bool(env, "FAIRWATCH_S3_SECURE", True)
    if "://" in raw:
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                "FAIRWATCH_S3_ENDPOINT", f"expected host:port or a URL, got {raw!r}"
            )
        secure = parts.scheme == "https"
        raw = parts.netloc
    host, _, port = raw.partition(":")
    if not host or (port and not port.isdigit()) or "/" in raw:
        raise SettingsError("FAIRWATCH_S3_ENDPOINT", f"expected host:port, got {raw!r}")
    access = env.get("FAIRWATCH_S3_ACCESS_KEY", "")
    secret = env.get("FAIRWATCH_S3_SECRET_KEY", "")
    if not access:
        raise SettingsError("FAIRWATCH_S3_ACCESS_KEY", "required when FAIRWATCH_S3_ENDPOINT is set")
    if not secret:
        raise SettingsError("FAIRWATCH_S3_SECRET_KEY", "required when FAIRWATCH_S3_ENDPOINT is set")
    bucket = env.get("FAIRWATCH_S3_BUCKET", "fairwatch")
    if not 3 <= len(bucket) <= 63 or not bucket.replace("-", "").replace(".", "").isalnum():
        raise SettingsError("FAIRWATCH_S3_BUCKET", f"not a valid bucket name: {bucket!r}")
    if production and not secure:
        raise SettingsError("FAIRWATCH_S3_SECURE", "must be true in production")
    region = env.get("FAIRWATCH_S3_REGION") or None
    return S3Settings(raw, access, secret, bucket.lower(), secure, region)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping, or raise SettingsError naming the variable."""
    raw_env = env.get("FAIRWATCH_ENV", "development").lower()
    try:
        environment = Environment(raw_env)
    except ValueError:
        raise SettingsError("FAIRWATCH_ENV", "expected development or production") from None
    production = environment is Environment.PRODUCTION

    database_url = _database_url(env)
    secret_key = env.get("FAIRWATCH_SECRET_KEY", "")
    if production:
        if database_url is None:
            raise SettingsError("FAIRWATCH_DATABASE_URL", "required in production")
        if len(secret_key) < 32:
            raise SettingsError(
                "FAIRWATCH_SECRET_KEY", "required in production (at least 32 random characters)"
            )
    master_key = env.get("FAIRWATCH_MASTER_KEY") or None
    master_key_file = (
        Path(env["FAIRWATCH_MASTER_KEY_FILE"]) if env.get("FAIRWATCH_MASTER_KEY_FILE") else None
    )
    if master_key and master_key_file:
        raise SettingsError(
            "FAIRWATCH_MASTER_KEY_FILE", "set either it or FAIRWATCH_MASTER_KEY, not both"
        )
    if production and not (master_key or master_key_file):
        raise SettingsError(
            "FAIRWATCH_MASTER_KEY", "required in production (or FAIRWATCH_MASTER_KEY_FILE)"
        )
    previous = tuple(
        k.strip() for k in env.get("FAIRWATCH_PREVIOUS_MASTER_KEYS", "").split(",") if k.strip()
    )

    log_level = env.get("FAIRWATCH_LOG_LEVEL", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError("FAIRWATCH_LOG_LEVEL", "expected DEBUG, INFO, WARNING or ERROR")
    pool_min = _int(env, "FAIRWATCH_DB_POOL_MIN", 2, 1, 100)
    pool_max = _int(env, "FAIRWATCH_DB_POOL_MAX", 10, 1, 500)
    if pool_max < pool_min:
        raise SettingsError("FAIRWATCH_DB_POOL_MAX", "must be at least FAIRWATCH_DB_POOL_MIN")
    data_dir = Path(env.get("FAIRWATCH_DATA_DIR", "var"))

    return Settings(
        environment=environment,
        host=env.get("FAIRWATCH_HOST", "127.0.0.1"),
        port=_int(env, "FAIRWATCH_PORT", 8000, 1, 65535),
        data_dir=data_dir,
        database_url=database_url,
        db_pool_min=pool_min,
        db_pool_max=pool_max,
        s3=_s3(env, production),
        secret_key=secret_key,
        master_key=master_key,
        master_key_file=master_key_file,
        previous_master_keys=previous,
        max_body_bytes=_int(env, "FAIRWATCH_MAX_BODY_BYTES", 10 * 1024 * 1024, 1024, 2**31),
        session_ttl_hours=_int(env, "FAIRWATCH_SESSION_TTL_HOURS", 12, 1, 24 * 90),
        log_level=log_level,
        log_json=_bool(env, "FAIRWATCH_LOG_JSON", True),
        create_demo=_bool(env, "FAIRWATCH_CREATE_DEMO", not production),
        worker_poll_seconds=_float(env, "FAIRWATCH_WORKER_POLL_SECONDS", 1.0, 0.05, 60.0),
        rate_device_per_minute=_int(env, "FAIRWATCH_RATE_DEVICE_PER_MINUTE", 120, 0, 10**6),
        rate_staff_per_minute=_int(env, "FAIRWATCH_RATE_STAFF_PER_MINUTE", 600, 0, 10**6),
        rate_anonymous_per_minute=_int(env, "FAIRWATCH_RATE_ANONYMOUS_PER_MINUTE", 30, 0, 10**6),
    )
