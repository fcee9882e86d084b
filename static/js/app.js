// Small progressive enhancements: tabs, copy buttons, dismissable messages, confirm dialogs.
// Every page works without this file; it only adds convenience.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function initTabs(root) {
    root.querySelectorAll("[data-tabs]").forEach(function (box) {
      if (box.dataset.tabsReady) return;
      box.dataset.tabsReady = "1";
      var tabs = Array.prototype.slice.call(box.querySelectorAll("[role=tab]"));
      function select(tab, focus) {
        tabs.forEach(function (t) {
          var on = t === tab;
          t.setAttribute("aria-selected", on ? "true" : "false");
          t.tabIndex = on ? 0 : -1;
          var panel = document.getElementById(t.getAttribute("aria-controls"));
          if (panel) panel.hidden = !on;
        });
        if (focus) tab.focus();
      }
      tabs.forEach(function (tab, i) {
        tab.addEventListener("click", function () { select(tab, false); });
        tab.addEventListener("keydown", function (e) {
          if (e.key === "ArrowRight") { select(tabs[(i + 1) % tabs.length], true); e.preventDefault(); }
          if (e.key === "ArrowLeft") { select(tabs[(i - 1 + tabs.length) % tabs.length], true); e.preventDefault(); }
        });
      });
      select(tabs[0], false);
    });
  }

  document.addEventListener("click", function (e) {
    var close = e.target.closest("[data-dismiss]");
    if (close) { close.closest(".flash").remove(); return; }
    var copy = e.target.closest("[data-copy-target]");
    if (copy) {
      var source = document.getElementById(copy.dataset.copyTarget);
      if (!source) return;
      var text = source.textContent.trim();
      var done = function () {
        var label = copy.textContent;
        copy.textContent = "Copied";
        copy.setAttribute("data-copied", "true");
        setTimeout(function () { copy.textContent = label; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
      } else { fallbackCopy(text); done(); }
    }
  });

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text; area.setAttribute("readonly", ""); area.style.position = "fixed"; area.style.opacity = "0";
    document.body.appendChild(area); area.select();
    try { document.execCommand("copy"); } catch (err) { /* the key stays selectable by hand */ }
    area.remove();
  }

  document.addEventListener("DOMContentLoaded", function () { initTabs(document); });
  document.addEventListener("htmx:afterSettle", function (e) { initTabs(e.target); });
})();
