/*
 * The certificate page's "Install on…" chooser (#install). Without this script it is a plain GET form
 * (?platform=...) and the server shows the platform it guessed from the User-Agent header. With it:
 *  - the platform is guessed again from navigator.userAgentData / userAgent (an iPad says it is a Mac; only
 *    its touch screen tells), unless the page was asked for one platform (data-asked);
 *  - choosing a platform switches in place: its file description and steps are shown (data-install-for),
 *    its downloads move to "Your file" and the others to "Other formats", the .p12 builder preselects the
 *    encryption the platform reads, and the address gets ?platform= so a reload or a shared link keeps it.
 */
(function () {
  "use strict";

  /** The platform this browser most likely runs on (the values of enroll.install.Platform). */
  function detectPlatform() {
    const ua = navigator.userAgent || "";
    const hinted = (navigator.userAgentData && navigator.userAgentData.platform) || "";
    if (/iPhone|iPad|iPod/.test(ua) || hinted === "iOS") {
      return "ios";
    }
    if (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1) {
      return "ios"; // iPadOS Safari asks for desktop pages with a Mac's User-Agent
    }
    if (/Android/.test(ua) || hinted === "Android") {
      return "android";
    }
    if (/Firefox\//.test(ua)) {
      return "firefox";
    }
    if (hinted === "Windows" || /Windows/.test(ua)) {
      return "windows";
    }
    if (hinted === "macOS" || /Macintosh|Mac OS X/.test(ua)) {
      return "macos";
    }
    if (hinted === "Linux" || hinted === "Chrome OS" || /Linux|X11|CrOS/.test(ua)) {
      return "linux";
    }
    return null;
  }

  function init() {
    const section = document.getElementById("install");
    if (!section) {
      return;
    }
    const form = document.getElementById("install-chooser");
    const radios = Array.from(form.querySelectorAll("input[name=platform]"));
    const fileList = document.getElementById("install-downloads");
    const otherList = document.getElementById("other-downloads");
    // every download link once, in the page's order, whichever list it is in now
    const links = Array.from(document.querySelectorAll("#install-downloads a[data-format], #other-downloads a[data-format]"));
    const order = ["pem", "chain", "der", "pkcs7", "x509-user-cert"];
    links.sort((a, b) => order.indexOf(a.dataset.format) - order.indexOf(b.dataset.format));

    function show(radio, { remember }) {
      const platform = radio.value;
      const files = (radio.dataset.files || "").split(" ").filter(Boolean);
      section.dataset.platform = platform;
      document.querySelectorAll("#install [data-install-for]").forEach((element) => {
        element.hidden = !element.dataset.installFor.split(" ").includes(platform);
      });
      files.forEach((format) => {
        const link = links.find((candidate) => candidate.dataset.format === format);
        if (link) {
          fileList.append(link);
        }
      });
      links.filter((link) => !files.includes(link.dataset.format)).forEach((link) => otherList.append(link));
      const encryption = radio.dataset.p12 ? document.getElementById(`p12-${radio.dataset.p12}`) : null;
      if (encryption) {
        encryption.checked = true;
      }
      if (remember) {
        const url = new URL(window.location.href);
        url.searchParams.set("platform", platform);
        window.history.replaceState(null, "", url);
      }
    }

    document.getElementById("install-show").hidden = true; // the choice applies at once
    form.addEventListener("submit", (event) => event.preventDefault());
    radios.forEach((radio) => {
      radio.addEventListener("change", () => {
        if (radio.checked) {
          show(radio, { remember: true });
        }
      });
    });

    // The key of this certificate is in this browser (p12.js found it): making the .p12 here is the file,
    // so the builder moves up to "Your file", before the downloads, into the first screen of a phone.
    const builder = document.getElementById("p12-builder");
    const builderBox = document.getElementById("install-builder");
    if (builder && builderBox) {
      const promote = () => {
        if (builder.dataset.state === "key-in-browser" && builderBox.parentElement !== fileList.parentElement) {
          fileList.before(builderBox);
          builderBox.classList.remove("mt-3");
          builderBox.classList.add("mb-2");
          section.dataset.key = "in-browser";
        }
      };
      new MutationObserver(promote).observe(builder, { attributes: true, attributeFilter: ["data-state"] });
      promote();
    }

    if (section.dataset.asked !== "true") {
      const detected = radios.find((radio) => radio.value === detectPlatform());
      if (detected && !detected.checked) {
        detected.checked = true;
        show(detected, { remember: false });
      }
    }
    section.dataset.ready = "true";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
