// Small progressive enhancements: tabs, copy buttons, dismissable messages, the delete dialog.
// Code is coloured on the server (Pygments); nothing here evaluates markup or inline code.
// Every page works without this file; it only adds convenience.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // --- Tabs (WAI-ARIA pattern: arrows move and select, Home/End jump) -------------------
  function initTabs(root) {
    root.querySelectorAll("[data-tabs]").forEach(function (box) {
      if (box.dataset.tabsReady) return;
      box.dataset.tabsReady = "1";
      var tabs = Array.prototype.slice.call(box.querySelectorAll("[role=tab]"));
      if (!tabs.length) return;
      var copyButton = box.querySelector("[data-copy-active-panel]");
      function select(tab, focus) {
        tabs.forEach(function (t) {
          var on = t === tab;
          t.setAttribute("aria-selected", on ? "true" : "false");
          t.tabIndex = on ? 0 : -1;
          var panel = document.getElementById(t.getAttribute("aria-controls"));
          if (panel) panel.hidden = !on;
          if (on && panel && copyButton) {
            var code = panel.querySelector("code[id]");
            if (code) copyButton.dataset.copyTarget = code.id;
          }
        });
        if (focus) tab.focus();
      }
      tabs.forEach(function (tab, i) {
        tab.addEventListener("click", function () { select(tab, false); });
        tab.addEventListener("keydown", function (e) {
          var next = null;
          if (e.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
          else if (e.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
          else if (e.key === "Home") next = tabs[0];
          else if (e.key === "End") next = tabs[tabs.length - 1];
          if (next) { select(next, true); e.preventDefault(); }
        });
      });
      var initial = tabs.filter(function (t) { return t.getAttribute("aria-selected") === "true"; })[0] || tabs[0];
      select(initial, false);
    });
  }

  // --- Copy buttons: [data-copy-target] names the element whose text (or value) to copy ---
  document.addEventListener("click", function (e) {
    var close = e.target.closest("[data-dismiss]");
    if (close) {
      var flash = close.closest(".flash");
      if (flash) flash.remove();
      return;
    }
    var copy = e.target.closest("[data-copy-target]");
    if (copy) {
      var source = document.getElementById(copy.dataset.copyTarget);
      if (!source) return;
      var text = (source.tagName === "INPUT" || source.tagName === "TEXTAREA" ? source.value : source.textContent).trim();
      if (!copy.dataset.copyLabel) copy.dataset.copyLabel = copy.textContent;
      var done = function () {
        copy.textContent = "Copied";
        copy.setAttribute("data-copied", "true");
        clearTimeout(copy._copyTimer);
        copy._copyTimer = setTimeout(function () {
          copy.textContent = copy.dataset.copyLabel;
          copy.removeAttribute("data-copied");
        }, 2000);
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
    try { document.execCommand("copy"); } catch (err) { /* the text stays selectable by hand */ }
    area.remove();
  }

  // --- Charts: a tap (or click) on a day shows its exact value under the chart; the <title>
  // tooltip only appears on hover, which a touch screen does not have.
  document.addEventListener("click", function (e) {
    var hit = e.target.closest && e.target.closest(".usage-chart .hit");
    if (!hit) return;
    var panel = hit.closest("[role=tabpanel]");
    var card = hit.closest(".usage-charts");
    var readout = card && card.querySelector("[data-chart-readout]");
    if (!readout) return;
    card.querySelectorAll(".hit.is-picked").forEach(function (other) { other.classList.remove("is-picked"); });
    hit.classList.add("is-picked");
    readout.textContent = hit.dataset.title;
    readout.classList.add("has-value");
    if (panel) readout.dataset.panel = panel.id;
  });

  // --- The delete confirmation <dialog>: opened as a modal when htmx inserts it, removed when
  // closed. Here rather than in hx-on attributes: the Content-Security-Policy allows no inline code.
  function initDialogs(root) {
    var dialogs = root.matches && root.matches("dialog[data-modal]") ? [root] : [];
    dialogs = dialogs.concat(Array.prototype.slice.call(root.querySelectorAll ? root.querySelectorAll("dialog[data-modal]") : []));
    dialogs.forEach(function (dialog) {
      if (dialog.dataset.modalReady) return;
      dialog.dataset.modalReady = "1";
      dialog.addEventListener("close", function () { dialog.remove(); });
      if (!dialog.open) dialog.showModal();
    });
  }

  // A form marked data-closes-dialog closes its dialog once its request is done, and puts the
  // focus on the element named by data-focus-after (the list the dialog acted on).
  document.addEventListener("htmx:afterRequest", function (e) {
    var form = e.detail && e.detail.elt;
    if (!form || !form.matches || !form.matches("[data-closes-dialog]")) return;
    var dialog = form.closest("dialog");
    if (dialog) dialog.close();
    var focus = form.dataset.focusAfter && document.getElementById(form.dataset.focusAfter);
    if (focus) focus.focus();
  });

  function init(root) { initTabs(root); initDialogs(root); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (e) { init(e.target); });
})();
