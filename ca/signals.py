"""Signals the CA sends for apps above it (the CA knows no requests, pages or e-mails).

``certificates_revoked`` is sent once a revocation for key compromise has committed, with
``revocations``: every certificate revoked in that step (the one named and the others on the same key),
and ``by``: who revoked (None for the operator's command line). :mod:`enroll.notifications` tells the
owners.

``ca_revoked`` is sent once a CA's revocation by its parent (:func:`ca.services.revocation.revoke_ca`) has
committed, with ``ca`` (the CA revoked) and ``by``: every certificate issued under it stops working, and
:mod:`enroll.notifications` tells their owners.
"""

from __future__ import annotations

from django.dispatch import Signal

certificates_revoked = Signal()
ca_revoked = Signal()
