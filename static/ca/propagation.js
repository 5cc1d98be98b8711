/* The revocation screen (templates/admin/ca/certificate/revocation.html): while any CRL or front server on
 * the page is not green, ask /pki/health.json every 2 seconds and update the colors, numbers and ages in
 * place, so that after a revocation the staff member sees each front server report the new CRL.
 * Each CA's panel has data-ca="SLUG"; each front server's row data-node="NAME"; the cells to update have
 * data-field. The color is always written as a word too, and changes are announced in the aria-live
 * region #enroll-propagation-status. No inline script: the page's CSP allows scripts from 'self' only. */
(function () {
  "use strict";

  var INTERVAL_MS = 2000;
  var COLOURS = ["green", "amber", "red"];
  var status = document.getElementById("enroll-propagation-status");
  if (!status) {
    return;
  }
  var url = status.getAttribute("data-health-url");
  var statesElement = document.getElementById("enroll-node-states");
  var stateTexts = statesElement ? JSON.parse(statesElement.textContent) : {};
  var timer = null;

  function allGreen() {
    var marked = document.querySelectorAll("[data-colour]");
    for (var i = 0; i < marked.length; i++) {
      if (marked[i].getAttribute("data-colour") !== "green") {
        return false;
      }
    }
    return true;
  }

  function field(container, name) {
    return container.querySelector('[data-field="' + name + '"]');
  }

  function setText(element, text) {
    if (element && element.textContent !== text) {
      element.textContent = text;
    }
  }

  function setColour(container, badge, colour, panelClassPrefix) {
    container.setAttribute("data-colour", colour);
    if (badge) {
      COLOURS.forEach(function (c) {
        badge.classList.remove("enroll-badge-" + c);
      });
      badge.classList.add("enroll-badge-" + colour);
      badge.setAttribute("data-health", colour);
      setText(badge, colour);
    }
    if (panelClassPrefix) {
      COLOURS.forEach(function (c) {
        container.classList.remove(panelClassPrefix + c);
      });
      container.classList.add(panelClassPrefix + colour);
    }
  }

  function utc(date) {
    return date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function updateNode(row, node, now) {
    setColour(row, field(row, "badge"), node.colour, null);
    setText(field(row, "state"), stateTexts[node.state] || node.state);
    setText(field(row, "crl-number"), node.crl_number === null ? "none" : "#" + node.crl_number);
    if (node.installed_seconds_ago === null) {
      setText(field(row, "installed"), "-");
    } else {
      var installed = new Date(now.getTime() - node.installed_seconds_ago * 1000);
      setText(field(row, "installed"), utc(installed) + " (" + node.installed_seconds_ago + " s ago)");
    }
    setText(
      field(row, "last-report"),
      node.last_report_seconds_ago === null ? "never" : node.last_report_seconds_ago + " s ago"
    );
    setText(field(row, "error"), node.error || "-"); // errors come to staff sessions only
  }

  function update(data) {
    var now = new Date(data.now);
    var changes = [];
    (data.authorities || []).forEach(function (authority) {
      var panel = document.querySelector('[data-ca="' + CSS.escape(authority.slug) + '"]');
      if (!panel) {
        return;
      }
      var before = panel.getAttribute("data-colour");
      setColour(panel, field(panel, "badge"), authority.colour, "enroll-crl-");
      if (authority.crl_number !== null) {
        setText(field(panel, "crl-number"), String(authority.crl_number));
      }
      var summary = field(panel, "summary");
      if (summary && summary.textContent !== authority.summary) {
        summary.textContent = authority.summary;
        changes.push(authority.slug + ": " + authority.summary);
      } else if (before !== authority.colour) {
        changes.push(authority.slug + ": " + authority.colour);
      }
      (authority.nodes || []).forEach(function (node) {
        var rows = panel.querySelectorAll("[data-node]");
        for (var i = 0; i < rows.length; i++) {
          if (rows[i].getAttribute("data-node") === node.node) {
            updateNode(rows[i], node, now);
          }
        }
      });
    });
    return changes;
  }

  function poll() {
    timer = null;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json(); // 503 (not all green) carries the same JSON
      })
      .then(function (data) {
        var changes = update(data);
        var green = allGreen();
        if (green) {
          changes.push("Every CRL and front server on this page is green.");
        }
        if (changes.length) {
          status.textContent = changes.join(". ");
        }
        if (!green) {
          schedule();
        }
      })
      .catch(function () {
        status.textContent = "Could not refresh the health of the front servers; retrying.";
        schedule();
      });
  }

  function schedule() {
    if (timer === null) {
      timer = window.setTimeout(poll, INTERVAL_MS);
    }
  }

  if (!allGreen()) {
    schedule();
  }
})();
