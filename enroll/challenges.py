"""SPKAC challenges: random, single use, bound to where they were shown, expiring.

A challenge is handed out on the SPKAC page (bound to a random token kept in the user's web session) or by
``manage.py spkac_challenge`` (bound to the command line for that user). An SPKAC signs its challenge;
:func:`consume` accepts it only if it is one of the owner's challenges, shown to the same session, not
expired and not used, and marks it used with a conditional UPDATE (``... WHERE used_at IS NULL``), so a
replay or two submissions racing each other use it once. Candidates are compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import enum
import hmac
import secrets

from django.contrib.sessions.backends.base import SessionBase
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from ca.clock import utcnow
from ca.types import Account
from enroll.models import SpkacChallenge

#: How long a challenge may be used after it was handed out.
CHALLENGE_LIFETIME_MINUTES = 30
CHALLENGE_LIFETIME = dt.timedelta(minutes=CHALLENGE_LIFETIME_MINUTES)
#: How long used and expired challenges are kept (so a late replay is named as such), then deleted.
CHALLENGE_RETENTION = dt.timedelta(days=2)
#: The binding of challenges handed out by ``manage.py spkac_challenge`` (never a session token: a colon).
COMMAND_LINE_BINDING = "cli:manage.py"
#: Where the web session keeps its binding token.
SESSION_BINDING_KEY = "enroll_spkac_binding"


class ChallengeProblem(enum.StrEnum):
    WRONG = "wrong_challenge"
    OTHER_SESSION = "other_session"
    EXPIRED = "expired"
    USED = "used"


#: What each problem says (translated when it is shown: gettext_lazy).
_MESSAGES: dict[ChallengeProblem, Promise] = {
    ChallengeProblem.WRONG: _(
        "The SPKAC carries a challenge that was not given to you: make it again with the challenge shown "
        "now (openssl spkac ... -challenge CHALLENGE -digest sha256)."
    ),
    ChallengeProblem.OTHER_SESSION: _(
        "The SPKAC's challenge was given to another session (another browser or login, or the command "
        "line): make it again with the challenge shown to this one."
    ),
    ChallengeProblem.EXPIRED: _(
        "The SPKAC's challenge expired (a challenge works for %(minutes)s minutes): make it again with a "
        "fresh challenge."
    ),
    ChallengeProblem.USED: _(
        "The SPKAC's challenge was used already (each challenge works once): make a new SPKAC with a "
        "fresh challenge."
    ),
}


class ChallengeRefused(Exception):
    """The SPKAC's challenge is not one this session may use now; ``code`` says why. Nothing is stored."""

    def __init__(self, code: ChallengeProblem) -> None:
        super().__init__(code.value)
        self.code = code

    @property
    def message(self) -> str:
        """The problem in words, in the active language."""
        text = str(_MESSAGES[self.code])
        return (
            text % {"minutes": CHALLENGE_LIFETIME_MINUTES} if self.code == ChallengeProblem.EXPIRED else text
        )

    def __str__(self) -> str:
        return self.message


def session_binding(session: SessionBase) -> str:
    """The random token that binds challenges to this web session (made on first use)."""
    token = session.get(SESSION_BINDING_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(24)
        session[SESSION_BINDING_KEY] = token
    return token


def issue(*, owner: Account, binding: str, now: dt.datetime | None = None) -> SpkacChallenge:
    """A fresh challenge for ``owner`` bound to ``binding``: 160 random bits as 40 hex digits.

    Hex needs no quoting in a shell, in HTML or in the IA5String of the SPKAC.
    """
    now = now or utcnow()
    SpkacChallenge.objects.filter(owner=owner, expires_at__lt=now - CHALLENGE_RETENTION).delete()
    return SpkacChallenge.objects.create(
        owner=owner,
        binding=binding,
        value=secrets.token_hex(20),
        created_at=now,
        expires_at=now + CHALLENGE_LIFETIME,
    )


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def consume(*, owner: Account, binding: str, value: str, now: dt.datetime | None = None) -> SpkacChallenge:
    """Mark the challenge ``value`` used for ``owner`` in session ``binding``, or raise ChallengeRefused.

    Run it inside the transaction that stores the request, so a refusal later in that transaction
    leaves the challenge unused.
    """
    now = now or utcnow()
    matches = [c for c in SpkacChallenge.objects.filter(owner=owner) if _same(c.value, value)]
    if not matches:
        raise ChallengeRefused(ChallengeProblem.WRONG)
    mine = [c for c in matches if _same(c.binding, binding)]
    if not mine:
        raise ChallengeRefused(ChallengeProblem.OTHER_SESSION)
    challenge = mine[0]
    if challenge.used_at is not None:
        raise ChallengeRefused(ChallengeProblem.USED)
    if challenge.expires_at <= now:
        raise ChallengeRefused(ChallengeProblem.EXPIRED)
    updated = SpkacChallenge.objects.filter(pk=challenge.pk, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now
    )
    if updated != 1:  # another submission used it between our read and our update
        raise ChallengeRefused(ChallengeProblem.USED)
    challenge.used_at = now
    return challenge
