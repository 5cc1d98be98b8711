/*
 * The key generation page (portal:keygen): make a key pair with WebCrypto, a signed PKCS#10, make the user
 * save the key as an encrypted PKCS#8 file, keep the key in IndexedDB, then submit ONLY the CSR.
 *
 * Configuration comes from <script type="application/json" id="keygen-config"> (submitUrl, commonName,
 * fileStem). Needs pkijs.bundle.min.js and keys.js first.
 */
(function () {
  "use strict";

  // The page's words (static/portal/strings.js); English when the page carries none.
  const say = (key, fallback, values) =>
    window.EnrollStrings ? window.EnrollStrings.say(key, fallback, values) : fallback;

  const $ = (id) => document.getElementById(id);

  function showError(message) {
    const box = $("keygen-error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    $("keygen-error").hidden = true;
  }

  function setStatus(message) {
    $("keygen-status").textContent = message;
  }

  function csrfToken() {
    const field = document.querySelector("#keygen-form input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function init() {
    const root = $("keygen");
    if (!root) {
      return;
    }
    const keys = window.EnrollKeys;
    if (!keys) {
      $("keygen-error").textContent = say(
        "scripts-missing",
        "The page's scripts did not load. Reload the page; if that does not help, make the key with OpenSSL instead.",
      );
      $("keygen-error").hidden = false;
      $("keygen-choose").hidden = true;
      $("keygen-form").hidden = false;
      root.dataset.state = "broken";
      return;
    }
    if (!keys.cryptoAvailable()) {
      // Plain http on a host other than localhost: browsers switch WebCrypto off. Say so plainly.
      const host = $("keygen-insecure-host");
      if (host) {
        host.textContent = window.location.host;
      }
      $("keygen-insecure").hidden = false;
      root.dataset.state = "insecure";
      return;
    }
    const config = JSON.parse($("keygen-config").textContent);
    const form = $("keygen-form");
    form.hidden = false;
    root.dataset.state = "ready";

    let generated = null; // {keyPair, keyType, csrPem, encryptedPem, fingerprint}
    let saved = false;

    form.addEventListener("submit", (event) => event.preventDefault());

    $("keygen-generate").addEventListener("click", async () => {
      clearError();
      const passphrase = $("keygen-passphrase").value;
      const repeated = $("keygen-passphrase2").value;
      if (passphrase.length < keys.MIN_PASSPHRASE) {
        showError(
          say(
            "passphrase-short",
            "Choose a passphrase of at least {count} characters: it protects the key file.",
            { count: keys.MIN_PASSPHRASE },
          ),
        );
        return;
      }
      if (passphrase !== repeated) {
        showError(say("passphrases-differ", "The two passphrases differ. Type the same passphrase twice."));
        return;
      }
      const choice = form.querySelector("input[name=key_type]:checked");
      const keyTypeName = choice ? choice.value : "ec-p256";
      const keyType = keys.KEY_TYPES[keyTypeName];
      $("keygen-generate").disabled = true;
      try {
        setStatus(say("generating", "Generating a {key} key pair in this browser…", { key: keyType.label }));
        const keyPair = await crypto.subtle.generateKey(keyType.algorithm, true, ["sign", "verify"]);
        setStatus(say("signing", "Signing the certificate request…"));
        const csrDer = await keys.makeCsr(keyPair, config.commonName);
        setStatus(say("encrypting", "Encrypting the key for the file you save…"));
        const pkcs8 = await crypto.subtle.exportKey("pkcs8", keyPair.privateKey);
        const encryptedPem = await keys.encryptPkcs8(pkcs8, passphrase);
        const fingerprint = await keys.spkiFingerprint(keyPair.publicKey);
        await keys.saveKey({
          spkiSha256: fingerprint,
          privateKey: keyPair.privateKey,
          keyType: keyTypeName,
          keyDescription: keyType.label,
          createdAt: new Date().toISOString(),
          requestId: null,
        });
        generated = {
          keyPair,
          keyType,
          csrPem: keys.toPem("CERTIFICATE REQUEST", csrDer),
          encryptedPem,
          fingerprint,
        };
        $("keygen-passphrase").value = "";
        $("keygen-passphrase2").value = "";
        $("keygen-fingerprint").textContent = fingerprint;
        $("keygen-key-description").textContent = keyType.label;
        $("keygen-csr").textContent = generated.csrPem;
        $("keygen-choose").hidden = true;
        $("keygen-result").hidden = false;
        root.dataset.state = "generated";
        setStatus(say("key-ready", "Key pair ready. Save the key file, then submit the request."));
      } catch (error) {
        $("keygen-generate").disabled = false;
        setStatus("");
        showError(say("key-failed", "The browser could not make the key: {error}", { error: error.message || error }));
      }
    });

    $("keygen-save").addEventListener("click", () => {
      if (!generated) {
        return;
      }
      const fileName = `${config.fileStem}.key`; // one naming scheme on every page: <username>.key
      keys.download(generated.encryptedPem, fileName, "application/pkcs8");
      saved = true;
      $("keygen-saved-name").textContent = fileName;
      $("keygen-saved").hidden = false;
      $("keygen-submit").disabled = false;
      root.dataset.state = "saved";
    });

    $("keygen-submit").addEventListener("click", async () => {
      if (!generated || !saved) {
        showError(say("save-first", "Save the key file first: without it you cannot use the certificate elsewhere."));
        return;
      }
      clearError();
      $("keygen-submit").disabled = true;
      setStatus(say("submitting", "Submitting the certificate request (only the request: the key stays here)…"));
      try {
        const body = new URLSearchParams({ csr: generated.csrPem, device_name: $("keygen-device-name").value });
        const response = await fetch(config.submitUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
          body,
        });
        let answer = null;
        try {
          answer = await response.json();
        } catch (error) {
          // Not JSON: an ended session was redirected to the login page, or the form token is stale.
          const loggedOut = response.redirected || response.status === 401 || response.status === 403;
          answer = {
            ok: false,
            error: loggedOut
              ? say(
                  "session-ended",
                  "Your session has ended, so the request was not submitted. Your key file is saved: " +
                    "log in again in another tab, then come back here and press Submit again.",
                )
              : say("not-taken", "The portal could not take the request (HTTP {status}). Try again in a minute.", {
                  status: response.status,
                }),
          };
        }
        if (!response.ok || !answer.ok) {
          throw new Error(
            answer.error || say("portal-answered", "The portal answered HTTP {status}.", { status: response.status }),
          );
        }
        const record = await keys.getKey(generated.fingerprint);
        if (record) {
          record.requestId = answer.request_id;
          await keys.saveKey(record);
        }
        root.dataset.state = "submitted";
        setStatus(say("submitted", "Request #{number} submitted.", { number: answer.request_id }));
        window.location.assign(answer.url);
      } catch (error) {
        $("keygen-submit").disabled = false;
        setStatus("");
        showError(say("not-accepted", "The request was not accepted: {error}", { error: error.message || error }));
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
