/*
 * Shared helpers for keys made in this browser (key generation page and the .p12 builder).
 *
 * Needs static/vendor/pkijs/pkijs.bundle.min.js loaded first (window.EnrollPkijs = {pkijs, asn1js,
 * pvtsutils}). Exposes window.EnrollKeys. Nothing here sends a private key anywhere: keys stay in
 * IndexedDB (this origin only) and in files the user saves.
 */
(function () {
  "use strict";

  // The page's words (static/portal/strings.js); English when the page carries none.
  const say = (key, fallback, values) =>
    window.EnrollStrings ? window.EnrollStrings.say(key, fallback, values) : fallback;

  if (!window.EnrollPkijs) {
    return; // the vendored bundle did not load: the pages say so (window.EnrollKeys stays undefined)
  }
  const { pkijs, asn1js } = window.EnrollPkijs;

  const DB_NAME = "enroll-keys";
  const DB_VERSION = 1;
  const STORE = "keys";

  /** PBKDF2 iterations of PBES2 encryption (key file, .p12): native WebCrypto PBKDF2, well under a second. */
  const PBKDF2_ITERATIONS = 600000;

  /** The shortest passphrase the pages accept for a key file or a .p12. */
  const MIN_PASSPHRASE = 8;

  /** Key choices of the generation page: WebCrypto parameters for generateKey and importKey. */
  const KEY_TYPES = {
    "ec-p256": {
      label: "ECDSA P-256",
      algorithm: { name: "ECDSA", namedCurve: "P-256" },
      sign: { name: "ECDSA", hash: "SHA-256" },
    },
    "rsa-2048": {
      label: "RSA 2048",
      algorithm: {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
      sign: { name: "RSASSA-PKCS1-v1_5" },
    },
    "rsa-3072": {
      label: "RSA 3072",
      algorithm: {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 3072,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
      sign: { name: "RSASSA-PKCS1-v1_5" },
    },
  };

  /** True when this page may use WebCrypto (https, or http on localhost / 127.0.0.1). */
  function cryptoAvailable() {
    return Boolean(window.isSecureContext && window.crypto && window.crypto.subtle);
  }

  // --- bytes, hex, PEM ------------------------------------------------------------------------------

  function toHex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function toBase64(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  function fromBase64(text) {
    const binary = atob(text.replace(/\s+/g, ""));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes;
  }

  function toPem(label, buffer) {
    const lines = toBase64(buffer).match(/.{1,64}/g) || [];
    return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
  }

  /** Every PEM block with this label, as Uint8Arrays, in file order. */
  function pemBlocks(text, label) {
    const pattern = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, "g");
    return Array.from(text.matchAll(pattern), (m) => fromBase64(m[1]));
  }

  function utf8(text) {
    return new TextEncoder().encode(text);
  }

  function arrayBuffer(bytes) {
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  }

  async function sha256Hex(buffer) {
    return toHex(await crypto.subtle.digest("SHA-256", buffer));
  }

  /** Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo: the portal's key fingerprint (spki_sha256). */
  async function spkiFingerprint(publicKey) {
    return sha256Hex(await crypto.subtle.exportKey("spki", publicKey));
  }

  /** Offer bytes as a file download (no server round trip). */
  function download(data, fileName, mimeType) {
    const blob = new Blob([data], { type: mimeType });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = fileName;
    link.hidden = true;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // --- encrypted PKCS#8 (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC, what OpenSSL 3 writes) ------------

  /** pkijs encryption parameters for PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) with this password. */
  function pbes2Parameters(passphrase) {
    return {
      password: arrayBuffer(utf8(passphrase)),
      contentEncryptionAlgorithm: { name: "AES-CBC", length: 256 },
      hmacHashAlgorithm: "SHA-256",
      iterationCount: PBKDF2_ITERATIONS,
    };
  }

  /** A pkcs8ShroudedKeyBag (PBES2) of a PKCS#8 DER key: the key file's content and the .p12's key bag. */
  async function shroudedKeyBag(pkcs8Der, passphrase) {
    const bag = new pkijs.PKCS8ShroudedKeyBag({ parsedValue: pkijs.PrivateKeyInfo.fromBER(pkcs8Der) });
    await bag.makeInternalValues(pbes2Parameters(passphrase));
    return bag;
  }

  /** PKCS#8 DER of an extractable private key -> "ENCRYPTED PRIVATE KEY" PEM text. */
  async function encryptPkcs8(pkcs8Der, passphrase) {
    const bag = await shroudedKeyBag(pkcs8Der, passphrase);
    return toPem("ENCRYPTED PRIVATE KEY", bag.toSchema().toBER(false));
  }

  /**
   * "ENCRYPTED PRIVATE KEY" PEM (or DER) -> PKCS#8 DER (ArrayBuffer). Throws an Error with a plain message
   * when the file is not an encrypted key or the passphrase does not open it.
   */
  async function decryptPkcs8(fileBytes, passphrase) {
    const text = new TextDecoder("utf-8", { fatal: false }).decode(fileBytes);
    let der = null;
    if (text.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
      der = pemBlocks(text, "ENCRYPTED PRIVATE KEY")[0];
    } else if (text.includes("-----BEGIN PRIVATE KEY-----")) {
      return arrayBuffer(pemBlocks(text, "PRIVATE KEY")[0]); // an unencrypted PKCS#8 works too
    } else if (fileBytes.length > 0 && fileBytes[0] === 0x30) {
      der = fileBytes;
    }
    let bag;
    try {
      bag = pkijs.PKCS8ShroudedKeyBag.fromBER(arrayBuffer(der || new Uint8Array()));
    } catch (error) {
      throw new Error(
        say("not-encrypted-key", "This file is not an encrypted private key (PKCS#8). Choose the .key file you saved."),
      );
    }
    try {
      await bag.parseInternalValues({ password: arrayBuffer(utf8(passphrase)) });
    } catch (error) {
      throw new Error(say("wrong-passphrase", "The passphrase does not open this key file."));
    }
    return bag.parsedValue.toSchema().toBER(false);
  }

  // --- PKCS#10 ---------------------------------------------------------------------------------------

  /** A signed PKCS#10 (DER) for the key pair. pkijs DER-encodes WebCrypto's raw r||s ECDSA signature. */
  async function makeCsr(keyPair, commonName) {
    const csr = new pkijs.CertificationRequest();
    csr.version = 0;
    csr.subject.typesAndValues.push(
      new pkijs.AttributeTypeAndValue({
        type: "2.5.4.3", // commonName: the portal replaces the subject with the account's anyway
        value: new asn1js.Utf8String({ value: commonName }),
      }),
    );
    csr.attributes = [];
    await csr.subjectPublicKeyInfo.importKey(keyPair.publicKey);
    await csr.sign(keyPair.privateKey, "SHA-256");
    return csr.toSchema().toBER(false);
  }

  // --- certificates -----------------------------------------------------------------------------------

  /** WebCrypto import parameters for the key of a certificate (EC P-256/P-384 or RSA). */
  function keyParametersFor(certificate) {
    const spki = certificate.subjectPublicKeyInfo;
    const oid = spki.algorithm.algorithmId;
    if (oid === "1.2.840.10045.2.1") {
      const curveOid = spki.algorithm.algorithmParams.valueBlock.toString();
      const curves = { "1.2.840.10045.3.1.7": ["P-256", "SHA-256"], "1.3.132.0.34": ["P-384", "SHA-384"] };
      const curve = curves[curveOid];
      if (!curve) {
        throw new Error(`This certificate's curve (${curveOid}) is not supported in the browser.`);
      }
      return {
        algorithm: { name: "ECDSA", namedCurve: curve[0] },
        sign: { name: "ECDSA", hash: curve[1] },
      };
    }
    if (oid === "1.2.840.113549.1.1.1") {
      return {
        algorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
        sign: { name: "RSASSA-PKCS1-v1_5" },
      };
    }
    throw new Error(`This certificate's key type (${oid}) is not supported in the browser.`);
  }

  async function certificateSpkiFingerprint(certificate) {
    return sha256Hex(certificate.subjectPublicKeyInfo.toSchema().toBER(false));
  }

  /** True when the private key (CryptoKey, usage "sign") belongs to the certificate's public key. */
  async function keyMatchesCertificate(privateKey, certificate) {
    const parameters = keyParametersFor(certificate);
    const publicKey = await crypto.subtle.importKey(
      "spki",
      certificate.subjectPublicKeyInfo.toSchema().toBER(false),
      parameters.algorithm,
      false,
      ["verify"],
    );
    const probe = crypto.getRandomValues(new Uint8Array(32));
    const signature = await crypto.subtle.sign(parameters.sign, privateKey, probe);
    return crypto.subtle.verify(parameters.sign, publicKey, signature, probe);
  }

  // --- IndexedDB: keys kept in this browser, keyed by the SPKI fingerprint -----------------------------

  function openDb() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, DB_VERSION);
      request.onupgradeneeded = () => {
        request.result.createObjectStore(STORE, { keyPath: "spkiSha256" });
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  async function withStore(mode, action) {
    const db = await openDb();
    try {
      return await new Promise((resolve, reject) => {
        const transaction = db.transaction(STORE, mode);
        const request = action(transaction.objectStore(STORE));
        transaction.oncomplete = () => resolve(request ? request.result : undefined);
        transaction.onerror = () => reject(transaction.error);
        transaction.onabort = () => reject(transaction.error || new Error("IndexedDB transaction aborted"));
      });
    } finally {
      db.close();
    }
  }

  /** Store (or replace) a record {spkiSha256, privateKey: CryptoKey, keyType, createdAt, requestId}. */
  function saveKey(record) {
    return withStore("readwrite", (store) => store.put(record));
  }

  function getKey(spkiSha256) {
    return withStore("readonly", (store) => store.get(spkiSha256));
  }

  function allKeys() {
    return withStore("readonly", (store) => store.getAll());
  }

  window.EnrollKeys = {
    KEY_TYPES,
    MIN_PASSPHRASE,
    cryptoAvailable,
    toHex,
    toPem,
    pemBlocks,
    utf8,
    arrayBuffer,
    sha256Hex,
    spkiFingerprint,
    download,
    pbes2Parameters,
    shroudedKeyBag,
    encryptPkcs8,
    decryptPkcs8,
    makeCsr,
    keyParametersFor,
    certificateSpkiFingerprint,
    keyMatchesCertificate,
    saveKey,
    getKey,
    allKeys,
  };
})();
