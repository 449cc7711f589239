"""Settings, read from the environment (every variable is listed in README.md).

A malformed value stops start-up with one line: ``configuration error: NAME: why``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta
from pathlib import Path

from .env import (
    ConfigError,
    get_bool,
    get_choice,
    get_database,
    get_duration,
    get_int,
    get_list,
    get_money,
    get_networks,
    get_redis_url,
    get_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent


def _secret_key(data_dir: Path) -> str:
    """SECRET_KEY from the environment, else one generated once and kept in DATA_DIR."""
    key = get_str("SECRET_KEY")
    if key:
        return key
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


def _credential_keys(secret_key: str) -> list[str]:
    """Fernet keys for provider credentials: the first encrypts, all of them decrypt."""
    keys = get_list("CREDENTIALS_KEYS")
    for key in keys:
        try:
            if len(base64.urlsafe_b64decode(key.encode())) != 32:
                raise ValueError
        except ValueError:
            raise ConfigError(
                "CREDENTIALS_KEYS: each key must be 32 url-safe base64-encoded bytes "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            ) from None
    if keys:
        return keys
    # Embedded default: derived from SECRET_KEY, so changing SECRET_KEY needs a rotation.
    digest = hashlib.sha256(b"gateway-credentials:" + secret_key.encode()).digest()
    return [base64.urlsafe_b64encode(digest).decode()]


try:
    DATA_DIR = Path(get_str("DATA_DIR", str(BASE_DIR / "var")))
    DEBUG = get_bool("DJANGO_DEBUG", False)
    SECRET_KEY = _secret_key(DATA_DIR)
    CREDENTIALS_KEYS = _credential_keys(SECRET_KEY)
    ALLOWED_HOSTS = get_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
    CSRF_TRUSTED_ORIGINS = get_list("CSRF_TRUSTED_ORIGINS")
    CORS_ALLOWED_ORIGINS = get_list("CORS_ALLOWED_ORIGINS")
    DATABASES = {"default": get_database("DATABASE_URL", str(DATA_DIR / "gateway.sqlite3"))}
    DB_CONNECT_TIMEOUT = get_int("DB_CONNECT_TIMEOUT", 5, minimum=1)
    REDIS_URL = get_redis_url("REDIS_URL")
    CELERY_BROKER_URL = get_redis_url("CELERY_BROKER_URL") or REDIS_URL
    JWT_ACCESS_TTL = get_duration("JWT_ACCESS_TTL", 24 * 3600)
    JWT_REFRESH_TTL = get_duration("JWT_REFRESH_TTL", 7 * 86400)
    LOG_LEVEL = get_choice("LOG_LEVEL", "INFO", ("debug", "info", "warning", "error", "critical")).upper()
    LOG_FORMAT = get_choice("LOG_FORMAT", "json", ("json", "text"))
    RELAY_MAX_BODY_BYTES = get_int("RELAY_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
    RELAY_UPSTREAM_CONNECT_TIMEOUT = get_int("RELAY_UPSTREAM_CONNECT_TIMEOUT", 10, minimum=1)
    RELAY_ROUTING_STRATEGY = get_choice(
        "RELAY_ROUTING_STRATEGY",
        "weighted",
        ("weighted", "round_robin", "least_connections", "lowest_latency"),
    )
    RELAY_MAX_ATTEMPTS = get_int("RELAY_MAX_ATTEMPTS", 3, minimum=1)
    RELAY_BREAKER_FAILURES = get_int("RELAY_BREAKER_FAILURES", 3, minimum=1)
    RELAY_BREAKER_COOLDOWN = get_int("RELAY_BREAKER_COOLDOWN", 30, minimum=1)
    RELAY_CACHE_TTL = get_int("RELAY_CACHE_TTL", 300, minimum=1)
    TRUST_X_FORWARDED_FOR = get_bool("TRUST_X_FORWARDED_FOR", False)
    RELAY_DEFAULT_MAX_TOKENS = get_int("RELAY_DEFAULT_MAX_TOKENS", 4096, minimum=1)
    # the smallest completion limit the relay lowers a request to when the money left does
    # not pay for the whole one; below it the request is refused with 402
    RELAY_MIN_COMPLETION_TOKENS = get_int("RELAY_MIN_COMPLETION_TOKENS", 16, minimum=1)
    RELAY_RESERVATION_TTL = get_int("RELAY_RESERVATION_TTL", 900, minimum=30)
    # seconds: a fetch of an unfinished Midjourney task older than this reads the upstream
    MJ_POLL_INTERVAL = get_int("MJ_POLL_INTERVAL", 3, minimum=0)
    # seconds: an unfinished Midjourney task older than this becomes FAILURE (and is refunded)
    MJ_TASK_TIMEOUT = get_int("MJ_TASK_TIMEOUT", 1800, minimum=1)
    # the gateway's public base URL; when set, every submit asks the upstream to call
    # <MJ_NOTIFY_BASE_URL>/mj/notify/<provider id>/<token> on each change of the task
    MJ_NOTIFY_BASE_URL = get_str("MJ_NOTIFY_BASE_URL", "")
    # a client's notifyHook: attempts per change of a task (waiting 1 s, 2 s, 4 s... between)
    MJ_NOTIFY_ATTEMPTS = get_int("MJ_NOTIFY_ATTEMPTS", 4, minimum=1)
    # GET /mj/image/{id} and the console's thumbnails: the task's image fetched and served
    # by the gateway (the pages' Content-Security-Policy allows same-origin images only);
    # off: 404, clients use imageUrl and the console links to it
    MJ_IMAGE_PROXY = get_bool("MJ_IMAGE_PROXY", True)
    MJ_IMAGE_MAX_BYTES = get_int("MJ_IMAGE_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
    RELAY_LEASE_SIZE = get_int("RELAY_LEASE_SIZE", 256, minimum=1)
    # milliseconds between the checkpoints of a worker's open streams (Redis): what a killed
    # worker's streams are billed from (docs/failure-policy.md)
    RELAY_CHECKPOINT_MS = get_int("RELAY_CHECKPOINT_MS", 250, minimum=10)
    # each worker freezes its start-up objects out of the garbage collector's reach and
    # collects the young generation every this many allocations (core/runtime.py); 0 keeps
    # CPython's defaults
    GC_GEN0_THRESHOLD = get_int("GC_GEN0_THRESHOLD", 20_000, minimum=0)
    # the Redis settle lock's expiry; its owner renews it every third of that while it works
    SETTLE_LOCK_TTL = get_int("SETTLE_LOCK_TTL", 5, minimum=2)
    SETTLEMENT_STALE_SECONDS = get_int("SETTLEMENT_STALE_SECONDS", 60, minimum=5)
    RELAY_AUTH_FAILURES_PER_MINUTE = get_int("RELAY_AUTH_FAILURES_PER_MINUTE", 30, minimum=1)
    USAGE_LOG_RETENTION_DAYS = get_int("USAGE_LOG_RETENTION_DAYS", 90, minimum=0)
    # stored Responses (/v1/responses with store: true) are deleted after this; 0 keeps them
    RESPONSES_RETENTION_DAYS = get_int("RESPONSES_RETENTION_DAYS", 30, minimum=0)
    ALLOW_REGISTRATION = get_bool("ALLOW_REGISTRATION", True)
    # money given once to an account that signs itself up (API or dashboard), in nanos
    SIGNUP_CREDIT = get_money("SIGNUP_CREDIT", 0)
    # outbound fetches made for others (core/outbound.py): exceptions to the public-address
    # rule as host:port entries, and the caps of one fetch
    OUTBOUND_ALLOWED_HOSTS = get_list("OUTBOUND_ALLOWED_HOSTS")
    OUTBOUND_MAX_BYTES = get_int("OUTBOUND_MAX_BYTES", 2 * 1024 * 1024, minimum=1024)
    OUTBOUND_TIMEOUT = get_int("OUTBOUND_TIMEOUT", 10, minimum=1)
    OUTBOUND_MAX_REDIRECTS = get_int("OUTBOUND_MAX_REDIRECTS", 5, minimum=0)
    # web search run by the gateway ("web_search": true; relay/tools/web_search.py)
    WEB_SEARCH_BACKEND = get_choice(
        "WEB_SEARCH_BACKEND", "searxng", ("searxng", "brave", "tavily", "serper", "google", "exa")
    )
    WEB_SEARCH_URL = get_str("WEB_SEARCH_URL", "")  # empty: the hosted backend's public API
    WEB_SEARCH_API_KEY = get_str("WEB_SEARCH_API_KEY", "")
    WEB_SEARCH_ENGINE_ID = get_str("WEB_SEARCH_ENGINE_ID", "")  # Google Programmable Search's cx
    WEB_SEARCH_MAX_RESULTS = get_int("WEB_SEARCH_MAX_RESULTS", 5, minimum=1)
    WEB_SEARCH_MAX_CHARS = get_int("WEB_SEARCH_MAX_CHARS", 4000, minimum=100)
    WEB_SEARCH_MAX_ROUNDS = get_int("WEB_SEARCH_MAX_ROUNDS", 5, minimum=1)
    WEB_SEARCH_TIMEOUT = get_int("WEB_SEARCH_TIMEOUT", 10, minimum=1)
    WEB_SEARCH_CRAWL = get_bool("WEB_SEARCH_CRAWL", True)
    # seconds without a byte on a streamed web-search answer before an SSE comment (or an
    # Anthropic ping) keeps the client's connection alive while the gateway searches
    WEB_SEARCH_KEEPALIVE = get_int("WEB_SEARCH_KEEPALIVE", 10, minimum=1)
    BILLING_CURRENCY = get_str("BILLING_CURRENCY", "USD")
    # GET /metrics (Prometheus): a scraper sends this bearer token, or connects from one of
    # these networks; with neither set the metrics are refused
    METRICS_TOKEN = get_str("METRICS_TOKEN", "")
    METRICS_ALLOWED_NETWORKS = get_networks("METRICS_ALLOWED_NETWORKS")
except ConfigError as exc:
    raise SystemExit(f"configuration error: {exc}") from None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "corsheaders",
    "csp",
    "accounts",
    "keys",
    "providers",
    "billing",
    "quotas",
    "relay",
    "conversations",
    "jobs",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "jwtauth",
    "dashboard",
]

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that does not answer costs a request at most DB_CONNECT_TIMEOUT seconds,
    # then 503 (docs/failure-policy.md): the same bound for a connect and for the wait for
    # one of the pool's connections; and the pool's back-off between reconnection attempts
    # restarts after that long, so a returning server is used within a second or two.
    _db_options = DATABASES["default"]["OPTIONS"]
    _db_options["connect_timeout"] = DB_CONNECT_TIMEOUT
    if _db_options.get("pool"):
        _db_options["pool"].update(timeout=DB_CONNECT_TIMEOUT, reconnect_timeout=DB_CONNECT_TIMEOUT)

MIDDLEWARE = [
    "core.logging.RequestIdMiddleware",
    "gateway_project.middleware.DatabaseUnavailableMiddleware",  # 503, not 500, without a database
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "gateway_project.wsgi.application"
ASGI_APPLICATION = "gateway_project.asgi.application"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "gw",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "gateway"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = get_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve app static files without collectstatic on the embedded default

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "core.api.Pagination",
    "DEFAULT_THROTTLE_RATES": {"login_ip": "20/min", "login_username": "10/min", "register": "20/hour"},
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=JWT_ACCESS_TTL),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=JWT_REFRESH_TTL),
    "ROTATE_REFRESH_TOKENS": True,
    "SIGNING_KEY": SECRET_KEY,
    "UPDATE_LAST_LOGIN": True,
    # tokens carry a hash of the password: a password change ends every other session
    "CHECK_REVOKE_TOKEN": True,
    "USER_AUTHENTICATION_RULE": "accounts.selectors.user_can_authenticate",
    # logout ends the whole session (access tokens included); refresh tokens are single-use
    "AUTH_TOKEN_CLASSES": ("jwtauth.tokens.AccessToken",),
}

# Celery: with a broker, settlement and periodic jobs run in Celery workers; without
# one (the embedded default) the same code runs in-process.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if get_bool("TRUST_X_FORWARDED_PROTO") else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = get_bool("SECURE_COOKIES", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "core.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # httpx logs every request at INFO: probes and commands would print a JSON line per call
    "loggers": {name: {"level": "WARNING"} for name in ("django.db.backends", "httpx", "httpcore")},
}

CELERY_BEAT_SCHEDULE = {
    "settle-usage": {"task": "billing.settle_usage", "schedule": 1.0},
    "check-providers": {"task": "providers.check_providers", "schedule": 60.0},
    "release-expired-reservations": {"task": "quotas.release_expired", "schedule": 10.0},
    "purge-usage-logs": {"task": "billing.purge_usage_logs", "schedule": 3600.0},
    "purge-responses": {"task": "conversations.purge_responses", "schedule": 3600.0},
    "poll-midjourney": {"task": "jobs.poll_midjourney", "schedule": 5.0},
}

# --- management API, API docs and user dashboard --------------------------------------
# OpenAPI 3 schema at /api/schema/, Swagger UI at /api/docs/, ReDoc at /api/redoc/; the UI
# assets come from drf-spectacular-sidecar (served locally, no CDN).
SPECTACULAR_SETTINGS = {
    "TITLE": "AI gateway API",
    "DESCRIPTION": (
        "The relay (`/v1/*`, authenticated with an API key) and the management API "
        "(`/auth/*`, `/api/me/*`, `/api/admin/*`, authenticated with a JWT access token). "
        "Money is exact: amounts are decimal strings such as `12.500000000`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 1, "maximum": 999999999999999999}},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway_project.schema.add_relay_and_errors",
    ],
    "ENUM_NAME_OVERRIDES": {
        "UserStatusEnum": "accounts.models.User.Status",
        "KeyStatusEnum": "keys.models.APIKey.Status",
        "ProviderTypeEnum": "providers.models.Provider.Type",
        "ProviderStatusEnum": "providers.models.Provider.Status",
        "ProviderHealthEnum": "providers.models.Provider.Health",
        "ModelTypeEnum": "providers.models.Model.Type",
        "ModelStatusEnum": "providers.models.Model.Status",
        "QuotaStatusEnum": "quotas.models.Quota.Status",
        "RedemptionCodeStatusEnum": "billing.models.RedemptionCode.Status",
        "OutcomeEnum": ["success", "error"],
        "LedgerKindEnum": "billing.models.BillingRecord.Kind",
        "AdjustmentKindEnum": ["topup", "adjustment", "refund"],
    },
}
# Content-Security-Policy of every Django page (the console, the dashboard, the API docs):
# scripts only from this origin (no inline script anywhere: Swagger UI's start-up code is
# served as a file by the split view, ReDoc starts from its <redoc> element), nothing
# from other origins. Styles allow inline ones: the pages, Django's admin, Swagger UI and
# ReDoc's styled-components write <style> elements and style attributes. data: images are
# Swagger UI's and ReDoc's icons; ReDoc's search runs in a blob: worker.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "dashboard:login"
