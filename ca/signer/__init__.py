"""The signer: a process of its own that holds the CA keys and signs only what it re-checked.

:mod:`ca.signer.server` (``manage.py signer``) listens on a Unix socket, :mod:`ca.signer.client` is the key
backend web workers and commands sign with when ``ENROLL_SIGNER_SOCKET`` is set, :mod:`ca.signer.protocol`
the wire format between them and :mod:`ca.signer.checks` what the signer checks before it signs.
"""
