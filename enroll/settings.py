"""Django settings, all read from the environment (see docs/OPERATIONS.md, "Configuration")."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from accounts import frontserver, proxies
from enroll import env

# Lets generic classes such as admin.ModelAdmin[Model] be subscripted at run time (typing only).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env.get_bool("DJANGO_DEBUG", default=False)

_secret_key = env.get("DJANGO_SECRET_KEY")
if not _secret_key:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set when DJANGO_DEBUG is off."
        )
    _secret_key = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105 (debug only)
SECRET_KEY = _secret_key

ALLOWED_HOSTS = env.get_list(
    "DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)

DATA_DIR = Path(env.get("ENROLL_DATA_DIR") or BASE_DIR / "var").resolve()

_database_url = env.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'enroll.sqlite3'}"
try:
    _database = dj_database_url.parse(_database_url, conn_max_age=60)
except ValueError as exc:  # unknown scheme, bad URL
    raise ImproperlyConfigured(f"DATABASE_URL is not usable: {exc}") from None
if _database["ENGINE"] == "django.db.backends.sqlite3":
    if _database["NAME"] and _database["NAME"] != ":memory:":
        Path(_database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # IMMEDIATE transactions take the write lock at BEGIN, so concurrent writers queue instead of
    # failing with "database is locked" half-way through a transaction.
    # WAL lets readers (CRL downloads) run while a writer commits; synchronous=NORMAL is durable in
    # WAL mode except for the last transactions on power loss (not on a process crash).
    _database["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _database["CONN_MAX_AGE"] = 60
    _database["ENGINE"] = "enroll.sqlite"  # writers queue for the write lock (enroll/sqlite/base.py)
elif _database["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must be sqlite:///PATH or postgres://USER:PASSWORD@HOST/NAME.")
DATABASES = {"default": _database}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "crispy_forms",
    "crispy_bootstrap5",
    "axes",  # lock-out after failed logins (docs/OPERATIONS.md, "Rate limits and lock-out")
    "django_ratelimit",
    "csp",
    "django_tasks",  # background tasks (Django 6's API, backported): every e-mail is sent by one
    "django_tasks_db",  # ... stored in the database, run by `manage.py db_worker` (docs/MAIL.md)
    "ca.apps.CaConfig",
    "accounts.apps.AccountsConfig",
    "enroll.apps.EnrollConfig",
]

MIDDLEWARE = [
    # First: forwarding headers (X-Forwarded-For/-Proto) count only from ENROLL_TRUSTED_PROXIES.
    "accounts.proxies.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    # CRL and CA certificate downloads answered here, past sessions, CSRF, logins (ca/middleware.py).
    "ca.middleware.PublicPkiMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The page's language: the switcher's cookie, else the browser's Accept-Language, else English.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Certificate login (docs/FRONT-SERVERS.md): does nothing unless ENROLL_CERT_LOGIN_ENABLED.
    "accounts.certlogin.CertificateLoginMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last (as django-axes requires): turns a locked-out login into the lock-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "enroll.urls"
WSGI_APPLICATION = "enroll.wsgi.application"
ASGI_APPLICATION = "enroll.asgi.application"

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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

TIME_ZONE = "UTC"
USE_TZ = True

# --- Languages: English and German --------------------------------------------------------------------------
# LocaleMiddleware picks the language of each page: the cookie the switcher sets (templates/
# _language_switcher.html; and at login, from the account's Profile.language), else the browser's
# Accept-Language, else English. Mails go out in the recipient's language (accounts.emails); the PKI core's
# refusals become sentences in it (enroll.refusals). The one catalogue is enroll/locale/de/LC_MESSAGES/
# django.po: `manage.py makemessages` brings it up to date (enroll/management/commands/makemessages.py),
# `make messages` compiles it (GNU gettext's msgfmt), and tests/i18n/test_catalogue.py fails on a string that
# is missing, untranslated or fuzzy.
USE_I18N = True
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("de", "German")]
LOCALE_PATHS = [BASE_DIR / "enroll" / "locale"]
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_SAMESITE = "Lax"
LANGUAGE_COOKIE_SECURE = not DEBUG

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"

AUTHENTICATION_BACKENDS = [
    # First: refuses locked-out logins before any password is checked; as a ModelBackend it also loads
    # the users of force_login and of sessions made at sign-up.
    "axes.backends.AxesBackend",
    "django.contrib.auth.backends.ModelBackend",  # checks passwords
    "accounts.certlogin.CertificateBackend",
]

LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "accounts:login"

# --- E-mail: console in development, SMTP from the environment in production ------------------------
_email_host = env.get("EMAIL_HOST")
if _email_host:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = _email_host
    EMAIL_PORT = env.get_int("EMAIL_PORT", default=587, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env.get("EMAIL_HOST_USER") or ""
    EMAIL_HOST_PASSWORD = env.get("EMAIL_HOST_PASSWORD") or ""
    EMAIL_USE_TLS = env.get_bool("EMAIL_USE_TLS", default=True)
elif DEBUG:  # development: printed to the console and kept for the page /dev/mail/ (enroll.devmail)
    EMAIL_BACKEND = "enroll.devmail.ConsoleAndFileBackend"
else:  # in production the check accounts.W001 warns that mail only reaches the log
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
#: Where development mail is kept (DEBUG without EMAIL_HOST; enroll.devmail).
ENROLL_DEV_MAIL_DIR = DATA_DIR / "dev-mail"
DEFAULT_FROM_EMAIL = env.get("DEFAULT_FROM_EMAIL", "Enroll Portal <noreply@localhost>") or ""

# --- Background tasks (django-tasks): mail leaves the request path (docs/MAIL.md) ---------------------------
# A request only enqueues (a row in the database, once its transaction commits); `manage.py db_worker`,
# started by `make run` and by its systemd unit in production, renders and sends.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG

# --- HTTPS and security headers (docs/OPERATIONS.md, "Security headers" and "Production") -------------------
#: The portal's pages are served over HTTPS (directly or by a TLS-terminating front server): redirect
#: plain HTTP there and send HSTS. On by default outside debug when ENROLL_PUBLIC_URL is https; set it
#: explicitly when the public URL stays http for the CRL/OCSP URLs (they are exempt from the redirect).
ENROLL_HTTPS = env.get_bool(
    "ENROLL_HTTPS",
    default=not DEBUG
    and env.get_url("ENROLL_PUBLIC_URL", default="http://127.0.0.1:8000").startswith("https:"),
)
#: Paths never redirected to HTTPS. CRLs, CA certificates and OCSP stay reachable over plain HTTP (RFC 5280
#: 8, RFC 6960 A.1): their clients (nginx's OCSP client, CRL fetchers) do not follow redirects to HTTPS,
#: and need no secrecy. EST refuses plain HTTP itself, with a reason a device can log (a redirect would
#: only have it send its enrollment code in clear once more).
#: The device protocols' paths (docs/DEVICES.md): never redirected to https (SCEP is plain HTTP by design,
#: its CMS envelope protects the request), and never a session: certificate login leaves them alone.
ENROLL_DEVICE_PATHS = [r"^\.well-known/est/", r"^scep(/|$)"]
ENROLL_HTTPS_REDIRECT_EXEMPT = [r"^pki/", *ENROLL_DEVICE_PATHS]
if ENROLL_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = ENROLL_HTTPS_REDIRECT_EXEMPT
    SECURE_HSTS_SECONDS = env.get_int("ENROLL_HSTS_SECONDS", default=31536000, minimum=0, maximum=63072000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("ENROLL_HSTS_INCLUDE_SUBDOMAINS", default=False)
    SECURE_HSTS_PRELOAD = env.get_bool("ENROLL_HSTS_PRELOAD", default=False)
#: Base URL of the pages in e-mailed links when it is not ENROLL_PUBLIC_URL (on https if ENROLL_HTTPS):
#: e.g. a public URL with an http port of its own. Empty: derived (accounts.services.portal_url).
ENROLL_PORTAL_URL = (
    env.get_url("ENROLL_PORTAL_URL", default="http://unset") if env.get("ENROLL_PORTAL_URL") else ""
)
# Behind a TLS-terminating front server, its X-Forwarded-Proto says whether the client used HTTPS.
# Believed only from ENROLL_TRUSTED_PROXIES: accounts.proxies.TrustedProxyMiddleware drops the header
# when anyone else sends it.
if env.get_list("ENROLL_TRUSTED_PROXIES", default=[]):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No inline script, style or event handler anywhere (templates/ and static/portal/ only load files):
# 'self' for everything, nothing else. Bootstrap's JavaScript sets element.style from script (CSSOM),
# which CSP does not govern, so style-src needs no 'unsafe-inline' either.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],  # Bootstrap's icons (navbar toggler, form validation) are data: SVGs
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}
#: Browser features no page of the portal uses (Permissions-Policy: feature=()). Only features Chromium
#: knows: it logs an error on every page for an unknown one ("bluetooth" was one; Web Bluetooth has no
#: Permissions-Policy feature in Chromium). tests/realclients/test_console_clean.py checks in Chromium.
PERMISSIONS_POLICY: dict[str, list[str]] = {
    feature: []
    for feature in (
        "accelerometer", "camera", "display-capture", "geolocation", "gyroscope", "magnetometer",
        "microphone", "midi", "payment", "usb", "serial", "hid",
    )
}  # fmt: skip

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"ca": {"level": "INFO"}, "enroll": {"level": "INFO"}},
}

# --- The CA -----------------------------------------------------------------------------------------
#: Absolute base URL written into certificates (CRL distribution point, caIssuers).
ENROLL_PUBLIC_URL = env.get_url("ENROLL_PUBLIC_URL", default="http://127.0.0.1:8000")
#: Passphrase that encrypts the CA key files (PKCS#8). Required to create or use a CA.
ENROLL_CA_PASSPHRASE = env.get("ENROLL_CA_PASSPHRASE") or ""
#: A file holding the user PIN of the PKCS#11 token that keeps CA keys (docs/OPERATIONS.md, "HSM (PKCS#11)"),
#: read when the token is opened; empty: the environment's ENROLL_PKCS11_PIN. Never stored in the database.
ENROLL_PKCS11_PIN_FILE = env.get("ENROLL_PKCS11_PIN_FILE") or ""
#: Where CA key files live (inside the data dir by default).
ENROLL_CA_KEY_DIR = DATA_DIR / "ca"
#: O= in issued subjects (empty: none).
ENROLL_ORGANIZATION = env.get("ENROLL_ORGANIZATION", "Enroll Portal") or ""
#: Validity of client certificates, in days (never past the CA's own notAfter).
ENROLL_CERT_VALIDITY_DAYS = env.get_int("ENROLL_CERT_VALIDITY_DAYS", default=365, minimum=1, maximum=3650)
#: CRL lifetime (nextUpdate - thisUpdate), in hours. Re-signed when half of it has passed.
ENROLL_CRL_LIFETIME_HOURS = env.get_int("ENROLL_CRL_LIFETIME_HOURS", default=168, minimum=2, maximum=24 * 31)
#: Put the OCSP responder's URL into issued certificates' authorityInfoAccess.
ENROLL_OCSP_IN_AIA = env.get_bool("ENROLL_OCSP_IN_AIA", default=True)
#: OCSP response lifetime (nextUpdate - thisUpdate), in seconds. nginx's ssl_ocsp_cache keeps a "good"
#: answer until nextUpdate, so a revoked client gets in at most this long: 4 s, refused 5 s after the click.
ENROLL_OCSP_VALIDITY_SECONDS = env.get_int(
    "ENROLL_OCSP_VALIDITY_SECONDS", default=4, minimum=2, maximum=86400
)
#: Renewals by the owner of a still-valid, unrevoked certificate are approved without an administrator.
ENROLL_AUTO_APPROVE_RENEWALS = env.get_bool("ENROLL_AUTO_APPROVE_RENEWALS", default=False)
#: Managed devices (docs/DEVICES.md): a device's re-enrollment with its still-valid, unrevoked certificate
#: (EST simplereenroll, SCEP RenewalReq) is approved without an administrator, as EST and SCEP servers do.
ENROLL_AUTO_APPROVE_DEVICE_RENEWALS = env.get_bool("ENROLL_AUTO_APPROVE_DEVICE_RENEWALS", default=True)
#: Where devices reach EST and SCEP (the device front server: its own host name or port), shown with each
#: enrollment code; empty: the portal's own address.
ENROLL_DEVICE_URL = (
    env.get_url("ENROLL_DEVICE_URL", default="http://unset") if env.get("ENROLL_DEVICE_URL") else ""
)
#: Seconds a device whose request waits for an approver is told to wait before asking again (Retry-After).
ENROLL_DEVICE_RETRY_AFTER = env.get_int("ENROLL_DEVICE_RETRY_AFTER", default=60, minimum=1, maximum=86400)
#: How approvers hear of new requests (enroll.approver_mail, docs/MAIL.md): "each" (one e-mail per request),
#: "digest" (one e-mail listing the new ones, from manage.py notify_approvers, hourly) or "off". Each
#: approver may choose otherwise on their profile page.
ENROLL_APPROVER_MAIL = (env.get("ENROLL_APPROVER_MAIL") or "each").strip().lower()
if ENROLL_APPROVER_MAIL not in ("each", "digest", "off"):
    raise ImproperlyConfigured(
        f"ENROLL_APPROVER_MAIL={ENROLL_APPROVER_MAIL!r} is not a choice: use each, digest or off."
    )
#: Service level for decisions, in hours: a request waiting longer is overdue (approvers get one reminder
#: from manage.py notify_approvers; the admin's queue colours its waiting time).
ENROLL_APPROVAL_SERVICE_HOURS = env.get_int(
    "ENROLL_APPROVAL_SERVICE_HOURS", default=24, minimum=1, maximum=24 * 31
)
#: Accept MD5-signed SPKACs (old browsers, `openssl spkac` without -digest) for a legacy fleet; SHA-1 never.
ENROLL_SPKAC_ALLOW_MD5 = env.get_bool("ENROLL_SPKAC_ALLOW_MD5", default=False)
#: Lint every certificate (pkilint, RFC 5280) after signing it in memory; ERROR findings refuse it.
ENROLL_LINT_BEFORE_SIGN = env.get_bool("ENROLL_LINT_BEFORE_SIGN", default=True)
#: The signer (ca.signer, docs/OPERATIONS.md "The signer"): the Unix socket of `manage.py signer`. Set, web
#: workers and commands sign only through it and need neither the CA passphrase nor a PIN; empty: in-process.
ENROLL_SIGNER_SOCKET = env.get("ENROLL_SIGNER_SOCKET") or ""
#: The uids the signer serves (peer credentials of the socket); empty: the signer's own uid only.
_signer_uids = env.get_list("ENROLL_SIGNER_ALLOWED_UIDS", default=[])
if not all(uid.isdigit() for uid in _signer_uids):
    raise ImproperlyConfigured("ENROLL_SIGNER_ALLOWED_UIDS is a comma-separated list of numeric uids.")
ENROLL_SIGNER_ALLOWED_UIDS = [int(uid) for uid in _signer_uids]
#: Signatures per second the signer grants each caller uid, with bursts of a minute's worth.
ENROLL_SIGNER_RATE = env.get_int("ENROLL_SIGNER_RATE", default=500, minimum=1, maximum=1_000_000)
#: How long an e-mail verification link stays valid, in hours.
ENROLL_EMAIL_VERIFICATION_HOURS = env.get_int(
    "ENROLL_EMAIL_VERIFICATION_HOURS", default=48, minimum=1, maximum=720
)
#: Usernames (the certificates' names): ASCII letters, digits and . _ - by default; True widens them to
#: Unicode letters of one script, NFKC-normalised (accounts.usernames, docs/ARCHITECTURE.md).
ENROLL_USERNAME_UNICODE = env.get_bool("ENROLL_USERNAME_UNICODE", default=False)
#: Longest Cache-Control max-age for the CRL, in seconds (never beyond the CRL's nextUpdate).
ENROLL_CRL_MAX_AGE = env.get_int("ENROLL_CRL_MAX_AGE", default=60, minimum=0, maximum=86400)

# --- Certificate login (accounts.certlogin; docs/FRONT-SERVERS.md) ------------------------------------------
# The rules for these values live in accounts.frontserver and accounts.proxies, applied again at run time.


def _header_name(name: str, default: str) -> str:
    return frontserver.check_header_name((env.get(name) or default).strip(), setting=name)


#: Log people in from the client certificate a trusted front server verified and forwarded.
ENROLL_CERT_LOGIN_ENABLED = env.get_bool("ENROLL_CERT_LOGIN_ENABLED", default=False)
#: Front servers whose certificate and X-Forwarded-* headers are believed: IP addresses or networks of the
#: TCP peer (REMOTE_ADDR, never X-Forwarded-For), e.g. 127.0.0.1,10.0.0.0/8,::1 (IPv4-mapped IPv6 peers
#: such as ::ffff:127.0.0.1 count as IPv4); "unix": a Unix-socket peer. Empty: nobody.
ENROLL_TRUSTED_PROXIES = env.get_list("ENROLL_TRUSTED_PROXIES", default=[])
proxies.parse(ENROLL_TRUSTED_PROXIES)  # a bad entry stops the start
#: Header names the front server forwards. The serial, when sent, must match the certificate.
ENROLL_CERT_LOGIN_VERIFY_HEADER = _header_name(
    "ENROLL_CERT_LOGIN_VERIFY_HEADER", frontserver.DEFAULT_VERIFY_HEADER
)
ENROLL_CERT_LOGIN_CERT_HEADER = _header_name("ENROLL_CERT_LOGIN_CERT_HEADER", frontserver.DEFAULT_CERT_HEADER)
ENROLL_CERT_LOGIN_SERIAL_HEADER = _header_name(
    "ENROLL_CERT_LOGIN_SERIAL_HEADER", frontserver.DEFAULT_SERIAL_HEADER
)
if ENROLL_CERT_LOGIN_ENABLED and not ENROLL_TRUSTED_PROXIES:
    raise ImproperlyConfigured(
        "ENROLL_CERT_LOGIN_ENABLED is on but ENROLL_TRUSTED_PROXIES is empty: name the front servers "
        "(e.g. 127.0.0.1) whose certificate headers the portal may believe."
    )

# --- Rate limits and lock-out (accounts.ratelimits, django-axes; docs/OPERATIONS.md) ------------------------
# Counters live in the database (the one store every portal process shares): a cache table made by
# `migrate` (accounts migration 0002, or `createcachetable`). Its backend makes increments atomic.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "ratelimit": {
        "BACKEND": "accounts.ratelimits.RateLimitCache",
        "LOCATION": "enroll_rate_limit_cache",
        # Longer than the longest period (a day), so a counter never expires inside its window.
        "TIMEOUT": 86400 + 60,
        "OPTIONS": {"MAX_ENTRIES": 200_000},
    },
}
RATELIMIT_USE_CACHE = "ratelimit"
RATELIMIT_HASH_ALGORITHM = "hashlib.sha256"
#: Turn every rate limit off (e.g. for a load test driving many users from one address).
ENROLL_RATE_LIMITS_ENABLED = env.get_bool("ENROLL_RATE_LIMITS_ENABLED", default=True)
RATELIMIT_ENABLE = ENROLL_RATE_LIMITS_ENABLED
#: Per action, per client address and per account: COUNT/PERIOD (see enroll.env.get_rate), "" for none.
ENROLL_RATE_LIMITS: dict[str, dict[str, str]] = {
    action: {
        scope: env.get_rate(f"ENROLL_RATE_LIMIT_{action.upper()}_PER_{scope.upper()}", default=default)
        for scope, default in defaults.items()
    }
    for action, defaults in {
        "signup": {"address": "10/h"},
        "login": {"address": "30/10m", "account": "10/10m"},
        "submit": {"address": "60/h", "account": "20/h"},
        "challenge": {"address": "120/h", "account": "60/h"},
        # Endpoints that send mail (docs/MAIL.md). A password reset knows no account (the answer and its
        # work must not depend on whether one exists): its mailbox is its account.
        "password_reset": {"address": "10/h"},
        "verify_mail": {"address": "20/h", "account": "5/h"},  # "Send a new link"
        "email_change": {"address": "20/h", "account": "5/h"},
        # What one mailbox receives from all of them (and sign-up) together: a few tries, never a flood.
        "mail": {"mailbox": "3/h", "mailbox_day": "10/d"},
        # Wrong, expired, revoked or used-up enrollment codes sent by devices (EST, SCEP): after this many
        # in the window, that address (or that code) is refused until the window ends. Only failures count.
        "device_code": {"address": "20/h", "code": "10/h"},
    }.items()
}
# django_ratelimit.W001 says only that RateLimitCache is not one of the memcached/redis backends the
# library names. What that check guards against, a non-atomic increment (its E003 for DatabaseCache),
# RateLimitCache removes: increments run under a row lock (PostgreSQL) or the write lock (SQLite).
# tests/accounts/test_rate_limits.py counts concurrent increments on PostgreSQL.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]

#: Lock a username, and separately a client address, out after this many failed logins ...
AXES_ENABLED = env.get_bool("ENROLL_LOCKOUT_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.get_int("ENROLL_LOCKOUT_FAILURES", default=10, minimum=1, maximum=1000)
#: ... for this many minutes after the last failure (a password reset or an administrator lifts it sooner).
AXES_COOLOFF_TIME = dt.timedelta(
    minutes=env.get_int("ENROLL_LOCKOUT_MINUTES", default=15, minimum=1, maximum=7 * 24 * 60)
)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "accounts.ratelimits.lockout_address"
AXES_USERNAME_CALLABLE = "accounts.ratelimits.lockout_username"  # cut to 150 characters
AXES_LOCKOUT_CALLABLE = "accounts.ratelimits.lockout_response"
AXES_RESET_ON_SUCCESS = False  # a login to one's own account must not clear an address's failures
AXES_HTTP_RESPONSE_CODE = 429
#: Masked in the failed attempts axes stores: the password fields of the login, sign-up, profile and password
#: change forms (a wrong password on the profile or password change counts as a failed login).
AXES_SENSITIVE_PARAMETERS = [
    "ip_address",
    "old_password",
    "new_password1",
    "new_password2",
    "password1",
    "password2",
]
