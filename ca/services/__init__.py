"""The CA's operations across rows, one module per job.

- :mod:`ca.services.keys`: where each CA key file is, loading it (cached per process);
- :mod:`ca.services.authorities`: create a root or intermediate CA, import one, the default CA;
- :mod:`ca.services.issuance`: the one path that signs certificates (one or a batch);
- :mod:`ca.services.revocation`: revoke a certificate, block a compromised key;
- :mod:`ca.services.crl`: publish CRLs (numbering, lifetime, carry-over), the CRL to serve;
- :mod:`ca.services.crl_serving`: the public CRL endpoint's per-process caches;
- :mod:`ca.services.frontservers`: registered front servers and their signed install reports;
- :mod:`ca.services.propagation`: each CA's CRL health and each registered front server's color;
- :mod:`ca.services.ocsp`: OCSP answers from the database;
- :mod:`ca.services.export`: certificates, CA certificates and CRLs in the formats people download.

Their errors are in :mod:`ca.errors`. Callers import the module that owns the job.
"""
