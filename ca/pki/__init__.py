"""The PKI core: plain `cryptography`, no Django.

Parsing and checking requests (:mod:`.csr`, :mod:`.spkac`, sharing :mod:`.submission`; :mod:`.keypolicy`),
certificate profiles (:mod:`.profiles`), serials (:mod:`.serials`), CRLs (:mod:`.crl`), OCSP answers
(:mod:`.ocsp`) and CA keys (:mod:`.keys`).
"""
# The PKI core is plain `cryptography`: no Django import here (see docs/ARCHITECTURE.md).
