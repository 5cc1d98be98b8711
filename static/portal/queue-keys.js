/* Keyboard shortcuts on an enrollment request's admin page (templates/admin/enroll/enrollmentrequest/
   change_form.html): a = approve and next, r = focus the reason to reject, j / k = next / previous waiting
   request. Elements carry data-shortcut; nothing fires while typing in a field or with a modifier key. */
(function () {
  "use strict";
  function typing(target) {
    if (!target || !target.tagName) { return false; }
    var tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }
  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey || typing(event.target)) {
      return;
    }
    var key = event.key;
    if (key === "r") {
      var reason = document.getElementById("id_reason");
      if (reason) { event.preventDefault(); reason.focus(); }
      return;
    }
    if (key !== "a" && key !== "j" && key !== "k") { return; }
    var target = document.querySelector('[data-shortcut="' + key + '"]');
    if (target) { event.preventDefault(); target.click(); }
  });
}());
