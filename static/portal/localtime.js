// Times in the person's time zone: every <time data-localtime datetime="...Z"> the server wrote in UTC
// ({% when %}, enroll/templatetags/portal_time.py) is rewritten in the browser's time zone and the page's
// language; its title keeps the UTC time (shown on hover). Without JavaScript the UTC text stays.
(function () {
  "use strict";
  var STYLES = {
    datetime: { dateStyle: "medium", timeStyle: "short" },
    date: { dateStyle: "medium" },
    time: { timeStyle: "short" },
  };

  function locales() {
    // The browser's own variant of the page's language (en-GB on an English page), else the page's.
    var page = (document.documentElement.lang || "").toLowerCase();
    var browser = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
    for (var i = 0; i < browser.length; i++) {
      var tag = String(browser[i] || "");
      if (!page || tag.toLowerCase().split("-")[0] === page.split("-")[0]) {
        return [tag];
      }
    }
    return page ? [page] : undefined;
  }

  function zoneName(moment, locale) {
    try {
      var parts = new Intl.DateTimeFormat(locale, { timeZoneName: "short" }).formatToParts(moment);
      for (var i = 0; i < parts.length; i++) {
        if (parts[i].type === "timeZoneName") {
          return parts[i].value;
        }
      }
    } catch (e) {
      // no zone name: the time stands alone
    }
    return "";
  }

  function rewrite() {
    if (!window.Intl || !Intl.DateTimeFormat) {
      return;
    }
    var locale = locales();
    var times = document.querySelectorAll("time[data-localtime][datetime]");
    for (var i = 0; i < times.length; i++) {
      var element = times[i];
      var style = STYLES[element.getAttribute("data-localtime")];
      var moment = new Date(element.getAttribute("datetime"));
      if (!style || isNaN(moment.getTime())) {
        continue;
      }
      var text;
      try {
        text = new Intl.DateTimeFormat(locale, style).format(moment);
      } catch (e) {
        continue;
      }
      if (style.timeStyle) {
        var zone = zoneName(moment, locale);
        if (zone) {
          text += " " + zone;
        }
      }
      element.textContent = text;
      element.classList.add("localtime");
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", rewrite);
  } else {
    rewrite();
  }
})();
