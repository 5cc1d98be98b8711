/**
 * Copy buttons for command blocks: every <pre class="command"> on the page gets a "Copy" button above it
 * that puts the command's text on the clipboard (navigator.clipboard, or a selected text area and
 * document.execCommand("copy") where the Clipboard API is missing, e.g. on plain http). The result is
 * announced to screen readers through one polite live region ("Copied", or what to do instead).
 *
 * No inline script or style: the page only loads this file (Content-Security-Policy script-src 'self').
 */
(() => {
  "use strict";

  // The page's words (static/portal/strings.js); English when the page carries none.
  const say = (key, fallback, values) =>
    window.EnrollStrings ? window.EnrollStrings.say(key, fallback, values) : fallback;

  const RESET_MS = 2000;

  /** The page's live region for the announcements, made once. */
  function statusRegion() {
    let region = document.getElementById("copy-status");
    if (!region) {
      region = document.createElement("div");
      region.id = "copy-status";
      region.className = "visually-hidden";
      region.setAttribute("role", "status");
      region.setAttribute("aria-live", "polite");
      document.body.appendChild(region);
    }
    return region;
  }

  function announce(text) {
    const region = statusRegion();
    region.textContent = "";
    // A new text node after clearing: screen readers announce the same word again on a second copy.
    window.setTimeout(() => {
      region.textContent = text;
    }, 50);
  }

  /** Copy with a temporary text area: for browsers or pages without navigator.clipboard. */
  function copyWithSelection(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "position-fixed top-0 start-0 opacity-0";
    document.body.appendChild(area);
    const focused = document.activeElement;
    area.select();
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (_error) {
      copied = false;
    }
    area.remove();
    if (focused instanceof HTMLElement) {
      focused.focus();
    }
    return copied;
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch (_error) {
        // permission refused or no user activation: try the old way
      }
    }
    return copyWithSelection(text);
  }

  function addButton(block, index) {
    if (block.dataset.copyReady) {
      return;
    }
    block.dataset.copyReady = "1";
    if (!block.hasAttribute("tabindex")) {
      block.setAttribute("tabindex", "0"); // a block that scrolls sideways can be scrolled with the keyboard
    }
    if (!block.id) {
      block.id = `command-${index + 1}`;
    }
    const tools = document.createElement("div");
    tools.className = "command-tools";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-sm btn-outline-secondary copy-button";
    button.textContent = say("copy", "Copy");
    button.setAttribute("aria-controls", block.id);
    button.addEventListener("click", async () => {
      const copied = await copyText(block.innerText.replace(/\n+$/, ""));
      if (copied) {
        button.textContent = say("copied", "Copied");
        announce(say("copied", "Copied"));
      } else {
        button.textContent = say("copy", "Copy");
        announce(say("copy-failed", "Copying did not work in this browser: select the command and copy it yourself."));
      }
      window.setTimeout(() => {
        button.textContent = say("copy", "Copy");
      }, RESET_MS);
    });
    tools.appendChild(button);
    block.before(tools);
  }

  function init() {
    statusRegion();
    document.querySelectorAll("pre.command").forEach(addButton);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
