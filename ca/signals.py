"""Signals the CA sends for apps above it (the CA knows no requests, pages or e-mails).

``certificates_revoked`` is sent once a revocation for key compromise has committed, with
``revocations``: every certificate revoked in that step (the one named and the others on the same key),
and ``by``: who revoked (None for the operator's command line). :mod:`enroll.notifications` tells the
owners.
"""

from __future__ import annotations

from django.dispatch import Signal

certificates_revoked = Signal()
