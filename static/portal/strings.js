/*
 * What the portal's scripts say, in the page's language. The words are translated by the template
 * (templates/_script_strings.html, included by base.html) and carried in data- attributes of
 * #portal-strings: the strict Content-Security-Policy allows no inline script, and this needs no
 * catalogue request. EnrollStrings.say("copy-failed", "English fallback", { name: value }) returns the
 * page's sentence (or the fallback when the page has none) with its {name} placeholders filled in.
 */
(function () {
  "use strict";

  function say(key, fallback, values) {
    var holder = document.getElementById("portal-strings");
    var text = (holder && holder.getAttribute("data-" + key)) || fallback;
    return text.replace(/\{([a-z_]+)\}/g, function (whole, name) {
      return values && Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole;
    });
  }

  window.EnrollStrings = { say: say };
})();
