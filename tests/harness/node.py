"""node for tests: :class:`NodeServer`, ``https.createServer`` requiring client certificates checked against a
CA bundle and a CRL bundle, from a small script; a new CRL is swapped in with ``setSecureContext`` (no
restart) on SIGHUP or when the CRL file changes (docs/FRONT-SERVERS.md).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.harness.front import FrontServer
from tests.harness.process import ManagedProcess, port_open, read_text, write_file
from tests.harness.tls import ServerCertificate


class NodeError(RuntimeError):
    """node did not start, exited, or could not swap in a new CRL (the old one stays)."""


_NODE_SERVER_JS = r"""// Test HTTPS server for tests/harness/node.py (NodeServer).
// Requires a client certificate checked against a CA bundle and a CRL bundle. SIGHUP, or with a watch
// interval a change of the CRL file, swaps in the new CRL with server.setSecureContext(): no restart.
// Prints "listening", "reloaded N", "reload failed: ..." and "tlsClientError: CODE" lines (a certificate
// refused by rejectUnauthorized is not among those: node ends that connection without an event).
"use strict";
const fs = require("fs");
const https = require("https");

const [keyPath, certPath, caPath, crlPath, port, watchMs] = process.argv.slice(2);

// Every PEM block as a string of its own: node's `crl` option reads only the FIRST CRL of a string or
// Buffer, and a chain needs one CRL per CA (else every client fails with UNABLE_TO_GET_CRL).
function pemBlocks(path, label) {
  const text = fs.readFileSync(path, "latin1");
  const blocks = text.match(new RegExp(`-----BEGIN ${label}-----[^-]+-----END ${label}-----`, "g")) || [];
  const begun = text.split(`-----BEGIN ${label}-----`).length - 1;
  if (blocks.length === 0 || blocks.length !== begun) {
    throw new Error(`${path}: ${begun} ${label} begun, ${blocks.length} complete`);
  }
  return blocks;
}

function secureContext() {
  return {
    key: fs.readFileSync(keyPath),
    cert: fs.readFileSync(certPath),
    ca: pemBlocks(caPath, "CERTIFICATE"),
    crl: pemBlocks(crlPath, "X509 CRL"),
  };
}

const server = https.createServer(
  { ...secureContext(), requestCert: true, rejectUnauthorized: true, sessionTimeout: 0 },
  (req, res) => {
    const peer = req.socket.getPeerCertificate();
    const dn = Object.entries(peer.subject || {}).map(([k, v]) => `${k}=${v}`).join(",");
    const verify = req.socket.authorized ? "SUCCESS" : `FAILED:${req.socket.authorizationError}`;
    res.writeHead(200, { "Content-Type": "text/plain", Connection: "close" });
    res.end(`verify=${verify} serial=${peer.serialNumber} dn=${dn}\n`);
  },
);
server.on("tlsClientError", (err) => console.log(`tlsClientError: ${err.code || err.message}`));

let reloads = 0;
function reload() {
  try {
    server.setSecureContext(secureContext());
    reloads += 1;
    console.log(`reloaded ${reloads}`);
  } catch (err) {
    console.log(`reload failed: ${err.message}`);
  }
}
process.on("SIGHUP", reload);
process.on("SIGTERM", () => server.close(() => process.exit(0)));
if (Number(watchMs) > 0) {
  fs.watchFile(crlPath, { interval: Number(watchMs) }, (now, before) => {
    if (now.mtimeMs !== before.mtimeMs || now.ino !== before.ino) reload();
  });
}
server.listen(Number(port), "127.0.0.1", () => console.log("listening"));
"""


class NodeServer(FrontServer[int]):
    """``https.createServer({key, cert, ca, crl, requestCert: true, rejectUnauthorized: true})`` on
    127.0.0.1:<free port>, from a small script written to ``DIR/server.js``.

    A new CRL is swapped in with ``server.setSecureContext()``, no restart: on ``SIGHUP``
    (:attr:`reload_command` is ``kill -HUP PID`` for ``enroll-crl-sync``), or, with ``watch_interval``
    (seconds), when the CRL file changes (``fs.watchFile``; no reload command needed). A CRL node cannot
    load is logged and the old one stays. The page at ``/`` answers ``verify=... serial=... dn=...``.
    Handshakes that OpenSSL itself fails (no client certificate) are logged as ``tlsClientError: CODE``
    (see :meth:`log`); a certificate refused by ``rejectUnauthorized`` (revoked, unknown CA) is not:
    node then ends the connection after the handshake without any event or reason.
    """

    name = "node"
    title = "node server"
    programs = ("node", "nodejs")  # Debian's nodejs package installs node; older ones nodejs
    error = NodeError
    conf_name = "server.js"
    output_name = "output.log"
    ready_what = "node to listen"
    #: ``kill -HUP PID``: swap in the CRL file's current content.
    reload_signal = signal.SIGHUP

    def __init__(
        self,
        directory: Path,
        *,
        ca_bundle: bytes,
        crl_bundle: bytes,
        port: int | None = None,
        watch_interval: float | None = None,
    ) -> None:
        super().__init__(directory, ca_bundle=ca_bundle, crl_bundle=crl_bundle, port=port)
        self.watch_interval = watch_interval

    @property
    def script_path(self) -> Path:
        return self.conf_path

    def log(self) -> str:
        """What the server printed (stdout and stderr)."""
        return read_text(self.output_path)

    def _reload_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if line.startswith(("reloaded ", "reload failed: "))]

    def _configure(self, server: ServerCertificate) -> list[str]:
        self.script_path.write_text(_NODE_SERVER_JS)
        watch_ms = round(self.watch_interval * 1000) if self.watch_interval else 0
        argv = [self.program, str(self.script_path), str(server.key_path), str(server.cert_path)]
        return [*argv, str(self.ca_path), str(self.crl_path), str(self.port), str(watch_ms)]

    def _ready(self) -> bool:
        return "listening" in self.log().splitlines() and port_open(self.port)

    def reload_mark(self) -> int:
        """Note how many reloads were logged, before something else (a signal, a file change) reloads."""
        return len(self._reload_lines())

    def wait_reloaded(self, mark: int) -> None:
        """Wait for the next reload after :meth:`reload_mark`; :class:`NodeError` if node refused the CRL."""
        self._wait_until(lambda: len(self._reload_lines()) > mark, "node to swap in the new CRL")
        line = self._reload_lines()[mark]
        if line.startswith("reload failed: "):
            raise NodeError(f"node kept its old CRL: {line}")

    def update_crl(self, pem: bytes) -> None:
        """Swap in a new CRL bundle: write it atomically, then SIGHUP (or let the file watch see it)."""

        def swap(process: subprocess.Popen[bytes]) -> None:
            write_file(self.crl_path, pem)
            if not self.watch_interval:
                process.send_signal(signal.SIGHUP)

        self._reload(swap)
        self.crl_bundle = pem


#: ``node_factory(ca_bundle=..., crl_bundle=..., **options)`` (the fixture, tests/harness/fixtures.py).
NodeFactory = Callable[..., NodeServer]


class GeneratedNode(ManagedProcess):
    """The server ``manage.py frontend_config node`` prints, run as it is (``node DIR/server.js``); it
    listens on :attr:`port` and watches its CRL file itself (no reload command)."""

    name = "node"
    title = "generated node server"
    programs = ("node", "nodejs")
    error = NodeError
    conf_name = "server.js"
    output_name = "output.log"
    ready_what = "the generated node server to listen"

    def __init__(self, directory: Path, *, script: str, port: int) -> None:
        super().__init__(directory, port=port)
        self.script = script

    def log(self) -> str:
        return read_text(self.output_path)

    def _prepare(self) -> list[str]:
        self.conf_path.write_text(self.script)
        return [self.program, str(self.conf_path)]

    def _ready(self) -> bool:
        return f"listening on {self.port}" in self.log() and port_open(self.port)
