"""The portal's benchmark (``python -m bench``, ``make bench``): development only, not part of the product.

CRL publication, revocation to served CRL, issuance and the CRL endpoint, in a throwaway database (created
and destroyed here, like Django's test runner), so it never touches real data. Each figure is printed as
one line of JSON; where the issue set a target, the line says it (``target``) and whether it was met
(``pass``). Raw ``cryptography`` figures measured in the same run stand beside the portal's.

- :mod:`bench.__main__`: the command line (arguments, Django set-up);
- :mod:`bench.run`: the order of the parts, in the throwaway database;
- :mod:`bench.common`: JSON lines, targets, the throwaway database, measuring in a forked child, rows;
- :mod:`bench.issuance`, :mod:`bench.crl`, :mod:`bench.endpoint`: the three parts;
- :mod:`bench.est`: EST enrollments with a pre-approved code under gunicorn, and where their time goes;
- :mod:`bench.settings`, :mod:`bench.urls`: the settings and URLconf of the benchmark's web server.

Lives outside the ``enroll``, ``accounts`` and ``ca`` packages, so an installed portal never carries it.
"""
