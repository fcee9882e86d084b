// /keys/: a <dialog data-modal> that htmx inserts opens as a modal; closing it removes it.
// Without JavaScript the same links open pages of their own.
(function () {
  "use strict";
  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    var dialogs = root.matches && root.matches("dialog[data-modal]") ? [root] : [];
    if (root.querySelectorAll) dialogs = dialogs.concat(Array.prototype.slice.call(root.querySelectorAll("dialog[data-modal]")));
    dialogs.forEach(function (dialog) {
      if (dialog.open) return;
      dialog.addEventListener("close", function () { dialog.remove(); });
      dialog.showModal();
    });
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-close-dialog]");
    var dialog = button && button.closest("dialog");
    if (dialog) dialog.close();
  });
})();
