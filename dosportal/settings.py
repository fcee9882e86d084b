"""Settings for the DOS AI portal: one module, driven by environment variables.

Defaults make `make run` work with no set-up (DEBUG on, SQLite, in-process
limits, the built-in development model). Production flips by environment; the
README has the full table.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from dosportal.clientip import parse_trusted_proxies
from dosportal.env import (
    envbool,
    envchoice,
    envdecimal,
    envfernetkeys,
    envfloat,
    envint,
    envlist,
    envrate,
    envstr,
)
from dosportal.logfilters import logging_config
from dosportal.redisclient import check_url as check_redis_url
from dosportal.redisclient import parse_sentinels

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DEBUG", True)

SECRET_KEY = envstr("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "django-insecure-local-development-only"  # noqa: S105 - DEBUG only

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "dosportal.checks",  # the deployment's own system checks (not an app with models)
    # The admin, with its login sent through allauth and staff two-factor enforced (accounts/admin_site.py).
    "accounts.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.forms",  # Django's widget templates, for FORM_RENDERER below
    "django_htmx",
    "django_ratelimit",
    "template_partials",
    "accounts",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.usersessions",
    "apikeys",
    "billing",
    "webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # WhiteNoise, made async-capable so /v1 requests do not pay a thread hop for it.
    "dosportal.middleware.AsyncWhiteNoiseMiddleware",
    # CSP, Permissions-Policy, no-store: after WhiteNoise, so static files keep their caching.
    "dosportal.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # "Last seen" of the session list, at most one write per session every 5 minutes.
    "accounts.middleware.SessionLastSeenMiddleware",
]

ROOT_URLCONF = "dosportal.urls"

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
                "dosportal.context_processors.portal",
                "billing.context_processors.signup_offer",
            ],
            # dosportal is not an app; its template tags are registered here by name.
            "libraries": {"code": "dosportal.templatetags.code"},
        },
    },
]

FORM_RENDERER = "dosportal.forms.FormRenderer"

WSGI_APPLICATION = "dosportal.wsgi.application"
ASGI_APPLICATION = "dosportal.asgi.application"

DATABASES = {"default": dj_database_url.parse(envstr("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves several concurrent requests from one process.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A bounded pool per process: a burst of concurrent /v1 requests waits for a
    # connection instead of exhausting PostgreSQL's max_connections. With the pool,
    # connections are reused, so CONN_MAX_AGE stays 0 (Django requires it).
    pool_size = envint("DATABASE_POOL_MAX_SIZE", 20, minimum=0)
    if pool_size:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 0,
            "max_size": pool_size,
            "timeout": envfloat("DATABASE_POOL_TIMEOUT", 10.0, minimum=0.1),
            "max_idle": envfloat("DATABASE_POOL_MAX_IDLE", 300.0, minimum=1.0),
        }
    # With the pool, this is psycopg_pool's check of each connection a request takes from it
    # (one empty query, a round trip per dashboard request): a connection that a PostgreSQL
    # restart closed is replaced instead of failing the page. CONN_MAX_AGE=0 does not make it
    # moot: the pool, not Django, keeps connections between requests, and without the check
    # the first query of a request (the session's user, in the middleware) failed with
    # OperationalError, a 500 (test_faults.py reproduces it). (Django passes the pool its own
    # `check`, so /v1's cheaper one, dosportal.dbpool, cannot be given to it.)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# PgBouncer in transaction mode (DATABASE_POOLER=pgbouncer) hands each transaction whatever server
# connection is free, so nothing may outlive a transaction on it. Django's psycopg backend already
# sends no prepared statements (prepare_threshold None unless OPTIONS say otherwise) and binds
# parameters client-side; what remains to switch is QuerySet.iterator()'s server-side cursors (the
# CSV exports use it). The /v1 pool's own switch is in dosportal.v1.store.pool_kwargs; the README's
# "Scaling out" section has the rest, and dosportal.checks warns when this looks wrong.
DATABASE_POOLER = envchoice("DATABASE_POOLER", "", ("pgbouncer",))
if DATABASE_POOLER == "pgbouncer":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

# A read replica for the heavy reads (usage pages, the usage export): dosportal/dbrouter.py.
# Money, keys and anything that reads its own writes stay on the primary.
DATABASE_REPLICA_URL = envstr("DATABASE_REPLICA_URL")
if DATABASE_REPLICA_URL:
    replica = dj_database_url.parse(DATABASE_REPLICA_URL)
    if replica["ENGINE"] != DATABASES["default"]["ENGINE"]:
        raise ImproperlyConfigured("DATABASE_REPLICA_URL must be the same kind of database as DATABASE_URL")
    replica["OPTIONS"] = {**DATABASES["default"].get("OPTIONS", {}), **replica.get("OPTIONS", {})}
    replica["DISABLE_SERVER_SIDE_CURSORS"] = DATABASES["default"].get("DISABLE_SERVER_SIDE_CURSORS", False)
    replica["TEST"] = {"MIRROR": "default"}  # tests read the primary's test database through it
    DATABASES["replica"] = replica
    DATABASE_ROUTERS = ["dosportal.dbrouter.ReplicaRouter"]
# The usage page says how far behind its figures are when the replica lags by more than this.
DOS_AI_REPLICA_LAG_NOTICE_SECONDS = envfloat("DOS_AI_REPLICA_LAG_NOTICE_SECONDS", 5.0, minimum=0)

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    # ModelBackend stays first: Client.login() and force_login() in tests, and operators' scripts, use it.
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and shared state -------------------------------------------------
# One Redis (REDIS_URL, redis:// or rediss:// with REDIS_CA_FILE), or the primary that Redis
# Sentinel names (REDIS_SENTINELS + REDIS_SENTINEL_MASTER): dosportal/redisclient.py builds every
# client from these, for the /v1 limiter and the cache alike.
REDIS_URL = envstr("REDIS_URL")
REDIS_CA_FILE = envstr("REDIS_CA_FILE")
REDIS_SENTINELS = envlist("REDIS_SENTINELS", [])
REDIS_SENTINEL_MASTER = envstr("REDIS_SENTINEL_MASTER")
REDIS_SENTINEL_PASSWORD = envstr("REDIS_SENTINEL_PASSWORD")
check_redis_url(REDIS_URL)
parse_sentinels(REDIS_SENTINELS)
if REDIS_SENTINELS and not REDIS_SENTINEL_MASTER:
    raise ImproperlyConfigured("REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the primary to ask them for")
REDIS_CONFIGURED = bool(REDIS_URL or REDIS_SENTINELS)
if REDIS_CONFIGURED:
    CACHES = {
        "default": {
            # Redis, failing open (logged at ERROR) when Redis is unreachable: the cache holds only
            # throttle counters and allauth's short-lived state, and losing them must not take
            # sign-in down (dosportal/cache.py).
            "BACKEND": "dosportal.cache.FailOpenRedisCache",
            # With sentinels the location is not used: the pool asks them (dosportal.cache).
            "LOCATION": REDIS_URL or "redis://sentinel",
            "KEY_PREFIX": "dosportal",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
RATELIMIT_USE_CACHE = "default"
# django-ratelimit's W001 names only django-redis and memcached as supported, but
# Django's own RedisCache does add() with SET NX EX and incr() with INCRBY, both
# atomic, which is all django-ratelimit needs.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
if not REDIS_CONFIGURED:
    # django-ratelimit refuses LocMemCache (E003) because its counters are not
    # shared between processes. Without REDIS_URL the portal is the embedded,
    # single-process default, where a process-local counter is exact, so the
    # check is silenced deliberately. Every multi-process deployment sets
    # REDIS_URL (or REDIS_SENTINELS), and then the cache is Redis and the check does not apply.
    SILENCED_SYSTEM_CHECKS.append("django_ratelimit.E003")
# Dashboard throttles (django-ratelimit, accounts/throttle.py): attempts per IP, per (email, IP),
# and per email. The per-email rate is loose on purpose: it stops a slow, distributed guess at one
# account without letting a stranger lock its owner out.
DOS_AI_LOGIN_RATE = envstr("DOS_AI_LOGIN_RATE", "10/5m")
DOS_AI_LOGIN_EMAIL_RATE = envstr("DOS_AI_LOGIN_EMAIL_RATE", "100/h")
DOS_AI_SIGNUP_RATE = envstr("DOS_AI_SIGNUP_RATE", "10/h")
DOS_AI_PASSWORD_RESET_RATE = envstr("DOS_AI_PASSWORD_RESET_RATE", "5/h")

# --- Accounts: django-allauth (sign-up, sign-in, verified email, two-factor, sessions) ----------
ACCOUNT_ADAPTER = "accounts.adapter.PortalAccountAdapter"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*"]
ACCOUNT_UNIQUE_EMAIL = True
# Mandatory: a new account is signed in by the link in its first email. This keeps sign-up from
# revealing whether an address has an account (both get the same "check your inbox" page; the
# existing owner gets an email instead), and it is what gates the starting credit and keys.
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_PREVENT_ENUMERATION = True
# The same work (a password hash) for a taken address as for a fresh one: same page, same time.
ACCOUNT_FORMS = {"signup": "accounts.forms.PortalSignupForm"}
ACCOUNT_EMAIL_NOTIFICATIONS = True
# A reset asked for an address with no account mails nobody (no mail to addresses we do not know).
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = False
ACCOUNT_CHANGE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_SESSION_REMEMBER = True  # as before: a sign-in lasts SESSION_COOKIE_AGE (two weeks)
# Changing email (like turning two-factor off, allauth.mfa's default) needs an explicit
# confirmation of the password or a second factor within the timeout.
ACCOUNT_REAUTHENTICATION_REQUIRED = True
ACCOUNT_REAUTHENTICATION_TIMEOUT = envint("DOS_AI_REAUTHENTICATION_SECONDS", 300, minimum=30)
ACCOUNT_EMAIL_SUBJECT_PREFIX = "DOS AI: "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "http" if DEBUG else "https"
# Sign-in, sign-up and password-reset requests are throttled by accounts/throttle.py (429 page with
# Retry-After); allauth keeps its own limits for the other steps (codes, confirmations, changes).
ACCOUNT_RATE_LIMITS = {"login": False, "login_failed": False, "signup": False, "reset_password": False}
MFA_ADAPTER = "accounts.adapter.PortalMFAAdapter"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_PASSKEY_LOGIN_ENABLED = False
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = DEBUG
MFA_TOTP_ISSUER = "DOS AI"
MFA_RECOVERY_CODE_COUNT = 10
# The code step (authenticator and recovery codes, at sign-in and when confirming it's you) is
# throttled by accounts/mfa_throttle.py per account and per client address; allauth's own limit
# on it is "login_failed", switched off above with the password form's.
MFA_FORMS = {
    "authenticate": "accounts.mfa_throttle.ThrottledAuthenticateForm",
    "reauthenticate": "accounts.mfa_throttle.ThrottledReauthenticateForm",
}
DOS_AI_MFA_RATE = envrate("DOS_AI_MFA_RATE", "5/15m")  # codes per account
DOS_AI_MFA_IP_RATE = envrate("DOS_AI_MFA_IP_RATE", "30/15m")  # codes per client address (IPv6: per /64)
# Fernet keys that encrypt TOTP secrets and recovery-code seeds at rest, newest first; all of them
# decrypt. Empty: a key derived from SECRET_KEY (check --deploy warns). accounts/mfa_encryption.py.
DOS_AI_MFA_ENCRYPTION_KEYS = envfernetkeys("DOS_AI_MFA_ENCRYPTION_KEYS")
USERSESSIONS_TRACK_ACTIVITY = False  # accounts.middleware does it, throttled
# Staff must have two-factor turned on before the Django admin lets them in.
DOS_AI_REQUIRE_2FA_FOR_STAFF = envbool("DOS_AI_REQUIRE_2FA_FOR_STAFF", not DEBUG)
# Addresses/CIDRs of reverse proxies whose X-Forwarded-For is believed (dosportal/clientip.py).
DOS_AI_TRUSTED_PROXIES = parse_trusted_proxies(envlist("DOS_AI_TRUSTED_PROXIES", []))
# The security log's page size on /settings/security/.
DOS_AI_SECURITY_LOG_PAGE_SIZE = 20

# --- Email --------------------------------------------------------------------
EMAIL_BACKEND = envstr("EMAIL_BACKEND", "dosportal.mail.EmailBackend")  # console, on stderr
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "DOS AI <noreply@localhost>")
# The dashboard's own address (https://app.example.com), for links in alert e-mails, which
# `send_alerts` writes outside any request. Without it the e-mails name the pages instead.
DOS_AI_SITE_URL = envstr("DOS_AI_SITE_URL").rstrip("/")

# --- Security -------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    # Probes and Prometheus scrape a worker directly, over the internal network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", True)
if envbool("SECURE_PROXY_SSL_HEADER", False):
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- The /v1 gateway -------------------------------------------------------------
DOS_AI_UPSTREAM_URL = envstr("DOS_AI_UPSTREAM_URL")  # one base URL, or a comma-separated pool
DOS_AI_UPSTREAM_API_KEY = envstr("DOS_AI_UPSTREAM_API_KEY")
DOS_AI_UPSTREAM_CONNECT_TIMEOUT = envfloat("DOS_AI_UPSTREAM_CONNECT_TIMEOUT", 5.0, minimum=0.001)
DOS_AI_UPSTREAM_TIMEOUT = envfloat("DOS_AI_UPSTREAM_TIMEOUT", 600.0, minimum=0.001)
DOS_AI_UPSTREAM_MAX_CONNECTIONS = envint("DOS_AI_UPSTREAM_MAX_CONNECTIONS", 1000, minimum=1)
DOS_AI_UPSTREAM_KEEPALIVE_SECONDS = envint("DOS_AI_UPSTREAM_KEEPALIVE_SECONDS", 30, minimum=1)
# The largest non-streaming answer the gateway reads from an upstream (an embeddings batch is big).
DOS_AI_UPSTREAM_MAX_RESPONSE_BYTES = envint("DOS_AI_UPSTREAM_MAX_RESPONSE_BYTES", 256 * 2**20, minimum=1024)
# Several upstreams (dosportal.v1.pool): failover within a deadline, health by failures in a row.
DOS_AI_UPSTREAM_DEADLINE = envfloat("DOS_AI_UPSTREAM_DEADLINE", DOS_AI_UPSTREAM_TIMEOUT, minimum=0.001)
DOS_AI_UPSTREAM_FAILURE_THRESHOLD = envint("DOS_AI_UPSTREAM_FAILURE_THRESHOLD", 3, minimum=1)
DOS_AI_UPSTREAM_PROBE_SECONDS = envfloat("DOS_AI_UPSTREAM_PROBE_SECONDS", 0.0, minimum=0)
DOS_AI_UPSTREAM_CATALOGUE_SECONDS = envfloat("DOS_AI_UPSTREAM_CATALOGUE_SECONDS", 5.0, minimum=0)
DOS_AI_ALLOW_DEV_MODEL = envbool("DOS_AI_ALLOW_DEV_MODEL", DEBUG)
if not DOS_AI_UPSTREAM_URL and not DOS_AI_ALLOW_DEV_MODEL:
    raise ImproperlyConfigured(
        "DOS_AI_UPSTREAM_URL is not set. Point it at an OpenAI-compatible server, or set "
        "DOS_AI_ALLOW_DEV_MODEL=1 to serve the built-in development model on purpose."
    )
DOS_AI_DEV_MODEL_DELAY = envfloat("DOS_AI_DEV_MODEL_DELAY", 0.02, minimum=0)
DOS_AI_MAX_REQUEST_BYTES = envint("DOS_AI_MAX_REQUEST_BYTES", 1024 * 1024, minimum=1)
DOS_AI_DEFAULT_MAX_TOKENS = envint("DOS_AI_DEFAULT_MAX_TOKENS", 1024, minimum=1)
# The prompt's upper bound at admission (dosportal.v1.tokens): what one image part counts, and
# a chat template's fixed preamble.
DOS_AI_IMAGE_PART_TOKENS = envint("DOS_AI_IMAGE_PART_TOKENS", 1_500, minimum=1)
DOS_AI_PROMPT_OVERHEAD_TOKENS = envint("DOS_AI_PROMPT_OVERHEAD_TOKENS", 32, minimum=0)
# Live holds (dosportal.v1.holds): how often a worker renews its calls' holds with what each has
# delivered, and after how long without renewal a hold belongs to a dead worker and is settled.
DOS_AI_HOLD_HEARTBEAT_SECONDS = envfloat("DOS_AI_HOLD_HEARTBEAT_SECONDS", 5.0, minimum=0.05)
DOS_AI_HOLD_STALE_SECONDS = envfloat("DOS_AI_HOLD_STALE_SECONDS", 30.0, minimum=0.1)
DOS_AI_RATE_WINDOW_SECONDS = envfloat("DOS_AI_RATE_WINDOW_SECONDS", 60.0, minimum=0.1)
DOS_AI_PUBLIC_API_URL = envstr("DOS_AI_PUBLIC_API_URL").rstrip("/")
DOS_AI_SIGNUP_CREDIT_USD = envdecimal("DOS_AI_SIGNUP_CREDIT_USD", "5.00")
# Where the billing page tells people to ask for credit (there is no payment processor).
DOS_AI_BILLING_CONTACT = envstr("DOS_AI_BILLING_CONTACT")
# The /v1 hot path's own async PostgreSQL pool (dosportal.v1.store), beside Django's.
DOS_AI_DB_POOL_SIZE = envint("DOS_AI_DB_POOL_SIZE", 20, minimum=1)
DOS_AI_DB_TIMEOUT = envfloat("DOS_AI_DB_TIMEOUT", 10.0, minimum=0.1)  # wait for a free connection
DOS_AI_DB_CONNECT_TIMEOUT = envfloat("DOS_AI_DB_CONNECT_TIMEOUT", 2.0, minimum=1.0)
DOS_AI_DB_POOL_MAX_IDLE = envfloat("DATABASE_POOL_MAX_IDLE", 300.0, minimum=1.0)
# Settlements waiting for the database are kept here on disk (dosportal.v1.settler).
DOS_AI_SPOOL_DIR = envstr("DOS_AI_SPOOL_DIR", str(BASE_DIR / "var" / "spool"))
# Failed authentications allowed per client address and rate window before it gets 429
# (the address is read as DOS_AI_TRUSTED_PROXIES says).
DOS_AI_AUTH_FAILURES_PER_MINUTE = envint("DOS_AI_AUTH_FAILURES_PER_MINUTE", 30, minimum=1)
# A request in flight holds its slot under a per-key concurrency cap for this long unless its worker
# renews it (every third of it); a killed worker's slots free themselves after at most this.
DOS_AI_CONCURRENCY_LEASE_SECONDS = envfloat("DOS_AI_CONCURRENCY_LEASE_SECONDS", 60.0, minimum=0.3)
# A dashboard or admin request body (forms, file uploads) larger than this is refused with 413
# before it is read (dosportal.asgi): Django would otherwise spool it whole to a temporary file.
DOS_AI_MAX_DASHBOARD_BODY_BYTES = envint("DOS_AI_MAX_DASHBOARD_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
# Django reads request bodies up to this size before refusing; /v1 applies its own
# (smaller, configurable) limit and answers 413 in the API's error shape.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(DOS_AI_MAX_REQUEST_BYTES, 2_621_440)

# --- Logs and metrics ------------------------------------------------------------
# Every handler redacts anything shaped like an API key (dosportal.logfilters), uvicorn's
# access and error logs included; LOG_FORMAT=json gives one JSON object per line.
LOG_LEVEL = envchoice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
LOG_FORMAT = envchoice("LOG_FORMAT", "text", ("text", "json"))
LOGGING = logging_config(level=LOG_LEVEL, log_format=LOG_FORMAT)
# /metrics (Prometheus text) answers only `Authorization: Bearer <this>`; unset, it is off (404).
# Counters live in PROMETHEUS_MULTIPROC_DIR (see dosportal.metrics) so all workers report one set.
DOS_AI_METRICS_TOKEN = envstr("DOS_AI_METRICS_TOKEN")

# Leaked keys (apikeys.leaks). GitHub's secret-scanning partner reports are verified against
# the public keys in this file (GitHub's format); `manage.py refresh_github_scanning_keys`
# downloads it from DOS_AI_GITHUB_META_URL. Reports larger than the limit are refused (413).
DOS_AI_GITHUB_SECRET_SCANNING_KEYS = envstr(
    "DOS_AI_GITHUB_SECRET_SCANNING_KEYS", str(BASE_DIR / "var" / "github_secret_scanning_keys.json")
)
DOS_AI_GITHUB_META_URL = envstr("DOS_AI_GITHUB_META_URL", "https://api.github.com/meta/public_keys/secret_scanning")
DOS_AI_SECRET_SCANNING_MAX_BYTES = envint("DOS_AI_SECRET_SCANNING_MAX_BYTES", 256 * 1024, minimum=1024)
# The public form /report-leaked-key/: reports per client address (django-ratelimit's rate).
DOS_AI_LEAK_REPORT_RATE = envstr("DOS_AI_LEAK_REPORT_RATE", "10/h")

# Webhooks (the webhooks app). Each server process sends due deliveries in the background,
# asking the outbox every DOS_AI_WEBHOOKS_POLL_SECONDS; `deliver_webhooks` is the cron catch-up.
# Receivers on loopback/private/link-local addresses are refused unless ALLOW_PRIVATE is on.
DOS_AI_WEBHOOKS_WORKER = envbool("DOS_AI_WEBHOOKS_WORKER", True)
DOS_AI_WEBHOOKS_POLL_SECONDS = envfloat("DOS_AI_WEBHOOKS_POLL_SECONDS", 2.0, minimum=0.1)
DOS_AI_WEBHOOKS_TIMEOUT = envfloat("DOS_AI_WEBHOOKS_TIMEOUT", 10.0, minimum=0.1)
DOS_AI_WEBHOOKS_ALLOW_PRIVATE = envbool("DOS_AI_WEBHOOKS_ALLOW_PRIVATE", False)

# Unusual spend (apikeys.unusual, checked by send_alerts): an hour above FACTOR × the key's own
# baseline (95th percentile of its hourly figures over 14 days) and above the floor is unusual.
DOS_AI_UNUSUAL_SPEND_FACTOR = envfloat("DOS_AI_UNUSUAL_SPEND_FACTOR", 5.0, minimum=1.0)
DOS_AI_UNUSUAL_SPEND_FLOOR_USD = envdecimal("DOS_AI_UNUSUAL_SPEND_FLOOR_USD", "1.00")
DOS_AI_UNUSUAL_SPEND_FLOOR_REQUESTS = envint("DOS_AI_UNUSUAL_SPEND_FLOOR_REQUESTS", 1000, minimum=1)
