// Light, dark or the system's choice (Auto) for the portal: Bootstrap 5.3's color modes (data-bs-theme on
// <html>). Loaded in <head> without defer, so the mode is set before the page is drawn (no flash); the
// person's choice is kept in localStorage ("enroll-theme": light, dark or auto; auto when unset). The
// switcher in the navigation (templates/base.html, [data-theme-choice] buttons) is shown by this script
// only: without JavaScript the page follows Bootstrap's light mode.
(function () {
  "use strict";
  var KEY = "enroll-theme";
  var CHOICES = ["light", "dark", "auto"];
  var system = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function stored() {
    try {
      var value = window.localStorage.getItem(KEY);
      return CHOICES.indexOf(value) >= 0 ? value : "auto";
    } catch (e) {
      return "auto"; // storage refused (private mode, blocked cookies): follow the system
    }
  }

  function remember(choice) {
    try {
      if (choice === "auto") {
        window.localStorage.removeItem(KEY);
      } else {
        window.localStorage.setItem(KEY, choice);
      }
    } catch (e) {
      // not kept beyond this page; the mode still changes
    }
  }

  function resolved(choice) {
    if (choice === "auto") {
      return system && system.matches ? "dark" : "light";
    }
    return choice;
  }

  function apply(choice) {
    document.documentElement.setAttribute("data-bs-theme", resolved(choice));
  }

  function showChoice(choice) {
    var buttons = document.querySelectorAll("[data-theme-choice]");
    var current = document.getElementById("theme-current");
    for (var i = 0; i < buttons.length; i++) {
      var button = buttons[i];
      var active = button.getAttribute("data-theme-choice") === choice;
      button.classList.toggle("active", active);
      button.setAttribute("aria-pressed", active ? "true" : "false");
      if (active && current) {
        current.textContent = button.getAttribute("data-label") || button.textContent; // the page's language
      }
    }
  }

  apply(stored());

  if (system) {
    var follow = function () {
      if (stored() === "auto") {
        apply("auto");
      }
    };
    if (system.addEventListener) {
      system.addEventListener("change", follow);
    } else if (system.addListener) {
      system.addListener(follow);
    }
  }

  // Another tab changed the choice: follow it here too.
  window.addEventListener("storage", function (event) {
    if (event.key === KEY || event.key === null) {
      apply(stored());
      showChoice(stored());
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var switcher = document.getElementById("theme-switch");
    if (!switcher) {
      return;
    }
    switcher.hidden = false;
    showChoice(stored());
    switcher.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-theme-choice]");
      if (!button) {
        return;
      }
      var choice = button.getAttribute("data-theme-choice");
      if (CHOICES.indexOf(choice) < 0) {
        return;
      }
      remember(choice);
      apply(choice);
      showChoice(choice);
    });
  });
})();
