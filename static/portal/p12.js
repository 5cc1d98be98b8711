/*
 * "Make a .p12 in this browser" on the certificate page: key from IndexedDB (matched by public key) or from
 * the saved encrypted PKCS#8 file + passphrase, the chain from the portal's chain download, assembled into a
 * PKCS#12 with pkijs and downloaded. Nothing is sent to the portal.
 *
 * Encryption choices:
 *  - modern: key and certificates PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), MAC HMAC-SHA-256 (OpenSSL 3's
 *    default);
 *  - legacy: key pbeWithSHAAnd3-KeyTripleDES-CBC (made by node-forge: WebCrypto has no 3DES), certificates
 *    unencrypted, MAC HMAC-SHA-1: what macOS Keychain and older Android read.
 *
 * Needs pkijs.bundle.min.js, forge.min.js (legacy only) and keys.js first. Data: data-* attributes of
 * #p12-builder (data-chain-url, data-file-stem, data-friendly-name).
 */
(function () {
  "use strict";

  // The page's words (static/portal/strings.js); English when the page carries none.
  const say = (key, fallback, values) =>
    window.EnrollStrings ? window.EnrollStrings.say(key, fallback, values) : fallback;

  const MAC_ITERATIONS = 2048; // what OpenSSL uses
  const OID = {
    keyBag: "1.2.840.113549.1.12.10.1.2", // pkcs8ShroudedKeyBag
    certBag: "1.2.840.113549.1.12.10.1.3",
    friendlyName: "1.2.840.113549.1.9.20",
    localKeyId: "1.2.840.113549.1.9.21",
  };

  const $ = (id) => document.getElementById(id);

  function showError(message) {
    const box = $("p12-error");
    box.textContent = message;
    box.hidden = false;
  }

  function setStatus(message) {
    $("p12-status").textContent = message;
  }

  function bagAttributes(asn1js, pkijs, localKeyId, friendlyName) {
    return [
      new pkijs.Attribute({
        type: OID.friendlyName,
        values: [new asn1js.BmpString({ value: friendlyName })],
      }),
      new pkijs.Attribute({
        type: OID.localKeyId,
        values: [new asn1js.OctetString({ valueHex: localKeyId })],
      }),
    ];
  }

  /** pkcs8ShroudedKeyBag with pbeWithSHAAnd3-KeyTripleDES-CBC, encrypted by node-forge. */
  function legacyKeyBag(pkijs, pkcs8Der, passphrase) {
    const forge = window.forge;
    if (!forge) {
      throw new Error(say("legacy-missing", "The legacy encryption library (node-forge) did not load."));
    }
    const raw = forge.util.binary.raw; // forge works on "binary strings" (one char per byte)
    const privateKeyInfo = forge.asn1.fromDer(forge.util.createBuffer(raw.encode(new Uint8Array(pkcs8Der))));
    const encrypted = forge.pki.encryptPrivateKeyInfo(privateKeyInfo, passphrase, {
      algorithm: "3des",
      count: MAC_ITERATIONS,
      saltSize: 8,
    });
    return pkijs.PKCS8ShroudedKeyBag.fromBER(raw.decode(forge.asn1.toDer(encrypted).getBytes()).buffer);
  }

  /** The PKCS#12 (DER ArrayBuffer) for a PKCS#8 key and a certificate chain (leaf first). */
  async function buildPkcs12({ pkcs8Der, chain, passphrase, legacy, friendlyName }) {
    const { pkijs, asn1js } = window.EnrollPkijs;
    const keys = window.EnrollKeys;
    const password = keys.arrayBuffer(keys.utf8(passphrase));
    const leafDer = chain[0].toSchema().toBER(false);
    const localKeyId = await crypto.subtle.digest("SHA-1", leafDer);

    const keyBag = legacy
      ? legacyKeyBag(pkijs, pkcs8Der, passphrase)
      : await keys.shroudedKeyBag(pkcs8Der, passphrase);
    const keySafe = new pkijs.SafeContents({
      safeBags: [
        new pkijs.SafeBag({
          bagId: OID.keyBag,
          bagValue: keyBag,
          bagAttributes: bagAttributes(asn1js, pkijs, localKeyId, friendlyName),
        }),
      ],
    });
    const certSafe = new pkijs.SafeContents({
      safeBags: chain.map(
        (certificate, index) =>
          new pkijs.SafeBag({
            bagId: OID.certBag,
            bagValue: new pkijs.CertBag({ parsedValue: certificate }),
            bagAttributes: index === 0 ? bagAttributes(asn1js, pkijs, localKeyId, friendlyName) : undefined,
          }),
      ),
    });

    const pfx = new pkijs.PFX({
      parsedValue: {
        integrityMode: 0, // password-based MAC
        authenticatedSafe: new pkijs.AuthenticatedSafe({
          parsedValue: {
            safeContents: [
              { privacyMode: 0, value: keySafe }, // the key bag is encrypted itself
              { privacyMode: legacy ? 0 : 1, value: certSafe },
            ],
          },
        }),
      },
    });
    await pfx.parsedValue.authenticatedSafe.makeInternalValues({
      safeContents: [
        {},
        legacy ? {} : keys.pbes2Parameters(passphrase),
      ],
    });
    await pfx.makeInternalValues({
      password,
      iterations: MAC_ITERATIONS,
      pbkdf2HashAlgorithm: legacy ? "SHA-1" : "SHA-256",
      hmacHashAlgorithm: legacy ? "SHA-1" : "SHA-256",
    });
    return pfx.toSchema().toBER(false);
  }

  /**
   * The certificate and its CA chain from the portal. ``lookup``: only to find the key when the page opens,
   * which the portal does not count as the owner's download (the dashboard keeps asking for one until the
   * .p12 is made or a file is downloaded).
   */
  async function loadChain(url, { lookup = false } = {}) {
    const { pkijs } = window.EnrollPkijs;
    const keys = window.EnrollKeys;
    const headers = lookup ? { "X-Enroll-Lookup": "key" } : {};
    const response = await fetch(url, { credentials: "same-origin", headers });
    if (!response.ok) {
      throw new Error(`The certificate chain could not be fetched (HTTP ${response.status}).`);
    }
    const blocks = keys.pemBlocks(await response.text(), "CERTIFICATE");
    if (blocks.length === 0) {
      throw new Error(say("chain-empty", "The certificate chain download contained no certificate."));
    }
    return blocks.map((der) => pkijs.Certificate.fromBER(keys.arrayBuffer(der)));
  }

  /** The record in IndexedDB whose key belongs to the certificate, or null. */
  async function findStoredKey(leaf) {
    const keys = window.EnrollKeys;
    const fingerprint = await keys.certificateSpkiFingerprint(leaf);
    const record = await keys.getKey(fingerprint);
    if (record && record.privateKey) {
      return record;
    }
    return null;
  }

  async function init() {
    const root = $("p12-builder");
    if (!root) {
      return;
    }
    const keys = window.EnrollKeys;
    if (!keys || !keys.cryptoAvailable()) {
      $("p12-insecure").hidden = false;
      root.dataset.state = "insecure";
      return;
    }
    const form = $("p12-form");
    form.hidden = false;
    form.addEventListener("submit", (event) => event.preventDefault());

    let chain = null;
    let stored = null;
    try {
      chain = await loadChain(root.dataset.chainUrl, { lookup: true });
      stored = await findStoredKey(chain[0]);
    } catch (error) {
      showError(error.message || String(error));
    }
    if (stored) {
      $("p12-stored-text").textContent = stored.createdAt
        ? say("key-in-browser-made", "The private key of this certificate is in this browser (made {date}).", {
            date: stored.createdAt.slice(0, 10),
          })
        : say("key-in-browser", "The private key of this certificate is in this browser.");
      $("p12-stored").hidden = false;
      $("p12-use-file").addEventListener("click", () => {
        stored = null;
        $("p12-stored").hidden = true;
        $("p12-file-fields").hidden = false;
      });
    } else {
      $("p12-file-fields").hidden = false;
    }
    root.dataset.state = stored ? "key-in-browser" : "key-from-file";

    $("p12-build").addEventListener("click", async () => {
      $("p12-error").hidden = true;
      const passphrase = $("p12-passphrase").value;
      if (passphrase.length < keys.MIN_PASSPHRASE) {
        showError(
          say("p12-password-short", "Choose a .p12 password of at least {count} characters.", {
            count: keys.MIN_PASSPHRASE,
          }),
        );
        return;
      }
      if (passphrase !== $("p12-passphrase2").value) {
        showError(say("p12-passwords-differ", "The two .p12 passwords differ. Type the same password twice."));
        return;
      }
      const legacy = form.querySelector("input[name=p12_encryption]:checked").value === "legacy";
      $("p12-build").disabled = true;
      try {
        chain = await loadChain(root.dataset.chainUrl); // again: making the .p12 is the owner's download
        const parameters = keys.keyParametersFor(chain[0]);
        let pkcs8Der;
        if (stored) {
          setStatus(say("taking-key", "Taking the key from this browser…"));
          pkcs8Der = await crypto.subtle.exportKey("pkcs8", stored.privateKey);
        } else {
          const file = $("p12-keyfile").files[0];
          if (!file) {
            throw new Error(say("choose-key-file", "Choose the key file you saved when you generated the key."));
          }
          setStatus(say("decrypting", "Decrypting the key file…"));
          pkcs8Der = await keys.decryptPkcs8(
            new Uint8Array(await file.arrayBuffer()),
            $("p12-key-passphrase").value,
          );
        }
        let privateKey;
        try {
          privateKey = await crypto.subtle.importKey("pkcs8", pkcs8Der, parameters.algorithm, false, ["sign"]);
        } catch (error) {
          throw new Error(say("other-key-type", "This key is not the key of this certificate (another key type)."));
        }
        if (!(await keys.keyMatchesCertificate(privateKey, chain[0]))) {
          throw new Error(
            say("wrong-key", "This key is not the key of this certificate. Choose the key file saved for it."),
          );
        }
        setStatus(
          legacy
            ? say("building-legacy", "Building the .p12 (legacy 3DES / SHA-1)…")
            : say("building-modern", "Building the .p12 (AES-256 / SHA-256)…"),
        );
        const der = await buildPkcs12({
          pkcs8Der,
          chain,
          passphrase,
          legacy,
          friendlyName: root.dataset.friendlyName || "client certificate",
        });
        const fileName = `${root.dataset.fileStem}${legacy ? "-legacy" : ""}.p12`;
        keys.download(der, fileName, "application/x-pkcs12");
        $("p12-passphrase").value = "";
        $("p12-passphrase2").value = "";
        root.dataset.state = "built";
        setStatus(say("p12-saved", "Saved {file}. Import it with the password you just chose.", { file: fileName }));
      } catch (error) {
        setStatus("");
        showError(error.message || String(error));
      } finally {
        $("p12-build").disabled = false;
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
