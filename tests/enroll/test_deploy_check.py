"""Production settings: `manage.py check --deploy --fail-level WARNING` passes with the production
environment of docs/OPERATIONS.md (in a subprocess, with the real settings module), and the switches it
relies on do what docs/OPERATIONS.md says."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def production_env(tmp_path: Path) -> dict[str, str]:
    """The environment of docs/OPERATIONS.md "Production", step 2, with SMTP mail (else accounts.W001)."""
    secret_key = tmp_path / "secret-key"
    secret_key.write_text(secrets.token_urlsafe(50) + "\n")
    passphrase = tmp_path / "ca-passphrase"
    passphrase.write_text(secrets.token_urlsafe(32) + "\n")
    # Nothing else of this process's environment, except coverage's (make test measures these processes).
    keep = {
        name: value
        for name, value in os.environ.items()
        if name in ("PATH", "HOME", "LANG") or name.startswith("COVERAGE_")
    }
    return {
        **keep,
        "DJANGO_SECRET_KEY_FILE": str(secret_key),
        "DJANGO_ALLOWED_HOSTS": "pki.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'enroll.sqlite3'}",
        "ENROLL_DATA_DIR": str(tmp_path),
        "ENROLL_PUBLIC_URL": "http://pki.example.com",
        "ENROLL_CA_PASSPHRASE_FILE": str(passphrase),
        "ENROLL_HTTPS": "true",
        "ENROLL_HSTS_INCLUDE_SUBDOMAINS": "true",
        "ENROLL_HSTS_PRELOAD": "true",
        "ENROLL_TRUSTED_PROXIES": "127.0.0.1",
        "EMAIL_HOST": "smtp.example.com",
        "EMAIL_HOST_USER": "enroll",
        "EMAIL_HOST_PASSWORD": "mail-password",
        "DEFAULT_FROM_EMAIL": "Enroll Portal <pki@example.com>",
    }


def deploy_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def loaded_settings(env: dict[str, str], *names: str) -> dict[str, object]:
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}, default=str))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "enroll.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded: dict[str, object] = json.loads(done.stdout)
    return loaded


def test_the_deploy_check_passes_with_the_production_environment(production_env: dict[str, str]) -> None:
    done = deploy_check(production_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


@pytest.mark.parametrize(
    ("change", "check_ids"),
    [
        # no redirect to HTTPS, no HSTS, console mail, a weak secret key
        (
            {
                "ENROLL_HTTPS": "false",
                "EMAIL_HOST": "",
                "DJANGO_SECRET_KEY_FILE": "",
                "DJANGO_SECRET_KEY": "short",
            },
            ["security.W008", "security.W004", "accounts.W001", "security.W009"],
        ),
        ({"ENROLL_HSTS_SECONDS": "0"}, ["security.W004"]),
        (
            {"ENROLL_HSTS_INCLUDE_SUBDOMAINS": "false", "ENROLL_HSTS_PRELOAD": "false"},
            ["security.W005", "security.W021"],
        ),
    ],
)
def test_the_deploy_check_fails_on_each_missing_piece(
    production_env: dict[str, str], change: dict[str, str], check_ids: list[str]
) -> None:
    env = {
        name: value for name, value in {**production_env, **change}.items() if value or name == "EMAIL_HOST"
    }
    done = deploy_check(env)
    assert done.returncode == 1
    assert [check_id for check_id in check_ids if check_id not in done.stderr] == []


def test_production_settings_are_secure(production_env: dict[str, str]) -> None:
    loaded = loaded_settings(
        production_env,
        "DEBUG", "SECURE_SSL_REDIRECT", "SECURE_REDIRECT_EXEMPT", "SECURE_HSTS_SECONDS",
        "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "RATELIMIT_ENABLE", "AXES_ENABLED",
    )  # fmt: skip
    assert loaded == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        # CRLs, CA certificates, OCSP: plain HTTP by design; EST refuses plain HTTP itself, with a reason.
        "SECURE_REDIRECT_EXEMPT": [r"^pki/", r"^\.well-known/est/", r"^scep(/|$)"],
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "RATELIMIT_ENABLE": True,
        "AXES_ENABLED": True,
    }


def test_an_https_public_url_turns_https_on_by_itself(production_env: dict[str, str]) -> None:
    env = {name: value for name, value in production_env.items() if name != "ENROLL_HTTPS"}
    assert loaded_settings(env, "SECURE_SSL_REDIRECT")["SECURE_SSL_REDIRECT"] is False  # http public URL
    env["ENROLL_PUBLIC_URL"] = "https://pki.example.com"
    assert loaded_settings(env, "SECURE_SSL_REDIRECT")["SECURE_SSL_REDIRECT"] is True


def test_no_proxy_header_is_believed_without_trusted_proxies(production_env: dict[str, str]) -> None:
    env = {name: value for name, value in production_env.items() if name != "ENROLL_TRUSTED_PROXIES"}
    assert loaded_settings(env, "SECURE_PROXY_SSL_HEADER")["SECURE_PROXY_SSL_HEADER"] is None


def test_a_load_test_can_turn_rate_limits_and_lock_out_off(production_env: dict[str, str]) -> None:
    env = {**production_env, "ENROLL_RATE_LIMITS_ENABLED": "false", "ENROLL_LOCKOUT_ENABLED": "false"}
    assert loaded_settings(env, "RATELIMIT_ENABLE", "AXES_ENABLED") == {
        "RATELIMIT_ENABLE": False,
        "AXES_ENABLED": False,
    }


def test_rates_and_lock_out_are_read_from_the_environment(production_env: dict[str, str]) -> None:
    env = {
        **production_env,
        "ENROLL_RATE_LIMIT_SIGNUP_PER_ADDRESS": "3/m",
        "ENROLL_RATE_LIMIT_SUBMIT_PER_ACCOUNT": "off",
        "ENROLL_LOCKOUT_FAILURES": "4",
        "ENROLL_LOCKOUT_MINUTES": "30",
    }
    loaded = loaded_settings(env, "ENROLL_RATE_LIMITS", "AXES_FAILURE_LIMIT", "AXES_COOLOFF_TIME")
    limits = loaded["ENROLL_RATE_LIMITS"]
    assert isinstance(limits, dict)
    assert limits["signup"] == {"address": "3/m"}
    assert limits["submit"] == {"address": "60/h", "account": ""}
    assert loaded["AXES_FAILURE_LIMIT"] == 4
    assert loaded["AXES_COOLOFF_TIME"] == "0:30:00"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENROLL_RATE_LIMIT_LOGIN_PER_ADDRESS", "lots"),
        ("ENROLL_LOCKOUT_FAILURES", "0"),
        ("ENROLL_HTTPS", "maybe"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(
    production_env: dict[str, str], name: str, value: str
) -> None:
    done = deploy_check({**production_env, name: value})
    assert done.returncode != 0
    assert name in done.stderr
