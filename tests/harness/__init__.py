"""Real clients and servers for tests, one module per program, all started and stopped one way.

- :mod:`~tests.harness.process`: the common shape, :class:`~tests.harness.process.ManagedProcess` (a
  private folder, a free port, one process started by PID, waited for until ready, stopped with exactly
  the children it had), and its small parts (free ports, atomic files, waits with a deadline);
- :mod:`~tests.harness.programs`: finding a program (:func:`~tests.harness.programs.need_program`: a
  missing one skips, or fails with ENROLL_REQUIRE_REAL_CLIENTS=1);
- :mod:`~tests.harness.tls`: throwaway server certificates and a plain TLS client;
- :mod:`~tests.harness.front`: what the client-certificate servers share (CA and CRL bundles, reloads);
- :mod:`~tests.harness.nginx`, :mod:`~tests.harness.apache`, :mod:`~tests.harness.node`: the servers;
  :class:`~tests.harness.nginx.NginxBalancer` the load balancer of the load test;
- :mod:`~tests.harness.gunicorn`: the portal itself as a gunicorn process;
- :mod:`~tests.harness.chromium`: Debian's Chromium through Playwright;
- :mod:`~tests.harness.openssl`: the ``openssl`` command line;
- :mod:`~tests.harness.webclient`: a cookie-keeping HTTP client for the load test;
- :mod:`~tests.harness.portal`: the portal's side (issued client certificates, CA and CRL bundles,
  registered front servers, a real ``enroll-crl-sync`` run);
- :mod:`~tests.harness.crlsync`: ``enroll-crl-sync`` as a service, and revocation-to-refusal measured at
  the client (also used by the benchmark, ``bench/reach.py``);
- :mod:`~tests.harness.fixtures`: the fixtures, registered once for the suite (tests/conftest.py).

How the programs behave on these machines is written down in docs/FRONT-SERVERS.md.
"""
