// berth web UI: the little that needs a script. Every page works without it.
// - a Copy button beside each pull command (text stays selectable without it);
// - "/" focuses the repository search, as on many sites.
"use strict";
(function () {
  var live = document.createElement("div");
  live.className = "sr";
  live.setAttribute("role", "status");
  live.setAttribute("aria-live", "polite");
  document.addEventListener("DOMContentLoaded", function () {
    document.body.appendChild(live);
    document.querySelectorAll(".cmd").forEach(function (cmd) {
      var code = cmd.querySelector("code");
      var label = cmd.querySelector(".cmd-label");
      if (!code) return;
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy the " + (label ? label.textContent : "") + " command");
      button.addEventListener("click", function () {
        var text = code.textContent;
        var done = function () {
          button.textContent = "Copied";
          live.textContent = "Copied to the clipboard";
          setTimeout(function () { button.textContent = "Copy"; }, 2000);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { select(code); });
        } else {
          select(code);
          try { if (document.execCommand("copy")) done(); } catch (e) { /* selected: copy by hand */ }
        }
      });
      cmd.appendChild(button);
    });
  });
  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  document.addEventListener("keydown", function (event) {
    var search = document.getElementById("q");
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (event.key === "/" && search && !typing) {
      event.preventDefault();
      search.focus();
    }
  });
})();
