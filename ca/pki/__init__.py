"""The PKI core: plain `cryptography`, no Django.

Parsing and checking requests (:mod:`.csr`, :mod:`.keypolicy`), certificate profiles
(:mod:`.profiles`), serials (:mod:`.serials`), CRLs (:mod:`.crl`) and CA keys (:mod:`.keys`).
"""
