// Small progressive enhancements: tabs, copy buttons, dismissable messages, code colouring.
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

  // --- Code colouring for pre[data-lang] (python, js, bash): text is unchanged, only wrapped ---
  var GRAMMARS = {
    python: [
      ["c", /#[^\n]*/],
      ["s", /"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'/],
      ["k", /\b(?:import|from|as|def|class|return|if|elif|else|for|in|while|with|try|except|finally|raise|await|async|lambda|None|True|False|and|or|not|is)\b/],
      ["n", /\b\d+(?:\.\d+)?\b/],
      ["f", /\b[A-Za-z_]\w*(?=\()/]
    ],
    js: [
      ["c", /\/\/[^\n]*/],
      ["s", /"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`/],
      ["k", /\b(?:import|from|export|const|let|var|new|await|async|function|return|if|else|for|of|in|true|false|null|undefined)\b/],
      ["n", /\b\d+(?:\.\d+)?\b/],
      ["f", /\b[A-Za-z_$][\w$]*(?=\()/]
    ],
    bash: [
      ["c", /#[^\n]*/],
      ["s", /"(?:[^"\\]|\\.)*"|'[^']*'/],
      ["k", /^(?:curl|export)\b/],
      ["o", /(?:^|(?<=\s))--?[A-Za-z][\w-]*/],
      ["v", /\$[A-Za-z_]\w*/]
    ]
  };

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  // Earliest match wins; at the same position the rule listed first wins (comments, then strings).
  function highlight(text, grammar) {
    var rules = grammar.map(function (rule) { return [rule[0], new RegExp(rule[1].source, "gm")]; });
    var html = "";
    var position = 0;
    while (position < text.length) {
      var best = null;
      rules.forEach(function (rule) {
        rule[1].lastIndex = position;
        var match = rule[1].exec(text);
        if (match && match[0].length && (!best || match.index < best.index)) {
          best = { index: match.index, text: match[0], kind: rule[0] };
        }
      });
      if (!best) break;
      html += escapeHtml(text.slice(position, best.index));
      html += '<span class="tok-' + best.kind + '">' + escapeHtml(best.text) + "</span>";
      position = best.index + best.text.length;
    }
    return html + escapeHtml(text.slice(position));
  }

  function initCode(root) {
    root.querySelectorAll("pre[data-lang]").forEach(function (pre) {
      if (pre.dataset.highlighted) return;
      var grammar = GRAMMARS[pre.dataset.lang];
      var code = pre.querySelector("code") || pre;
      if (!grammar || code.children.length) return;
      pre.dataset.highlighted = "1";
      code.innerHTML = highlight(code.textContent, grammar);
    });
  }

  function init(root) { initTabs(root); initCode(root); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSettle", function (e) { init(e.target); });
})();
