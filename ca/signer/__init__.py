"""The signer: a process of its own that holds the CA keys and signs only what it re-checked.

:mod:`ca.signer.server` (``manage.py signer``) listens on a Unix socket, with its rate limit and audit writer
in :mod:`ca.signer.bookkeeping`; :mod:`ca.signer.client` is the key backend web workers and commands sign
with when ``ENROLL_SIGNER_SOCKET`` is set; :mod:`ca.signer.protocol` is the wire format between them.
:mod:`ca.signer.checks` (certificates), :mod:`ca.signer.status_checks` (CRLs, OCSP responses),
:mod:`ca.signer.lookups` and :mod:`ca.signer.tbs` are what the signer checks before it signs.
"""
