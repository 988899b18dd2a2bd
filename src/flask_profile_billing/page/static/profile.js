/* The profile page of flask-profile-billing: progressive enhancement only. Without this file
   every dialog opens by a GET parameter and every form posts; with it, dialogs open as modals,
   the profile is saved through the JSON API, and the page dispatches DOM events a host's
   analytics can listen to: profile:view, profile:update, profile:cta_buy_quota. */
(function () {
  "use strict";
  var root = document.getElementById("profile-billing");
  if (!root) { return; }
  var data = root.dataset;

  function emit(name, detail) {
    root.dispatchEvent(new CustomEvent(name, { bubbles: true, detail: detail || {} }));
  }

  function headers() {
    return { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": data.csrfToken };
  }

  // -- toasts: one region, errors stay until dismissed -----------------------------------------
  function dismissible(toast) {
    var close = document.createElement("button");
    close.type = "button";
    close.className = "pb-toast__close";
    close.textContent = data.msgDismiss;
    close.addEventListener("click", function () { toast.remove(); });
    toast.appendChild(close);
  }

  function toast(message, error) {
    var region = document.getElementById(error ? "pb-toast-alert" : "pb-toast-status");
    var item = document.createElement("p");
    item.className = "pb-toast " + (error ? "pb-toast--error" : "pb-toast--success");
    item.setAttribute("data-pb-toast", "");
    item.textContent = message;
    region.appendChild(item);
    if (error) { dismissible(item); } else { later(item); }
    return item;
  }

  function later(item) {
    var timer = null;
    function start() { timer = window.setTimeout(function () { item.remove(); }, 6000); }
    function stop() { window.clearTimeout(timer); }
    item.addEventListener("mouseenter", stop);
    item.addEventListener("mouseleave", start);
    start();
  }

  root.querySelectorAll("#pb-toast-status [data-pb-toast]").forEach(later);
  root.querySelectorAll("#pb-toast-alert [data-pb-toast]").forEach(dismissible);

  // -- dialogs ----------------------------------------------------------------------------------
  var toasts = document.getElementById("pb-toasts");
  var toastsHome = toasts && toasts.parentNode;
  var toastsNext = toasts && toasts.nextSibling;
  var opener = null;
  var modal = null;
  var FOCUSABLE = "a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), " +
    "select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])";

  function dialogOf(name) { return document.getElementById("pb-dialog-" + name); }

  function open(name, from) {
    var dialog = dialogOf(name);
    if (!dialog || typeof dialog.showModal !== "function") { return false; }
    opener = from || document.activeElement;
    if (dialog.open) { dialog.close(); }
    dialog.showModal();
    modal = dialog;
    // A modal makes the rest of the page inert and covers it: toasts shown meanwhile (a refused
    // save) go inside it, where they can be seen and dismissed.
    if (toasts) { dialog.appendChild(toasts); }
    var first = dialog.querySelector("[aria-invalid='true']") || dialog.querySelector("[autofocus]");
    if (first) { first.focus(); }
    return true;
  }

  // The edit dialog's country and time zone lists come with its first opening, not with every
  // page; if they cannot be had, the click goes on as without JavaScript (?dialog=edit).
  function withChoices(then, fallback) {
    var lazy = root.querySelectorAll("select[data-pb-choices]");
    if (!lazy.length || !data.choices) { then(); return; }
    fetch(data.choices, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.json();
      })
      .then(function (choices) {
        lazy.forEach(function (select) {
          var chosen = select.value;
          var options = document.createDocumentFragment();
          (choices[select.getAttribute("data-pb-choices")] || []).forEach(function (pair) {
            options.appendChild(new Option(pair[1], pair[0], false, pair[0] === chosen));
          });
          while (select.options.length > 1) { select.remove(1); }  // keeps "Not set"
          select.appendChild(options);
          select.value = chosen;
          select.removeAttribute("data-pb-choices");
        });
        then();
      })
      .catch(fallback);
  }

  document.querySelectorAll("dialog[data-pb-dialog]").forEach(function (dialog) {
    dialog.addEventListener("close", function () {
      if (modal === dialog) { modal = null; }
      if (toasts && toasts.parentNode === dialog) {
        toastsHome.insertBefore(toasts, toastsNext && toastsNext.parentNode === toastsHome ? toastsNext : null);
      }
      if (opener && document.contains(opener)) { opener.focus(); }
      opener = null;
    });
  });

  // Tab and Shift+Tab cycle within the open modal: past its last control the browser would move
  // focus out of the page, to its own toolbar.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Tab" || !modal || !modal.open) { return; }
    var controls = [].filter.call(modal.querySelectorAll(FOCUSABLE), function (element) {
      return element.getClientRects().length > 0;
    });
    if (!controls.length) { return; }
    var first = controls[0];
    var last = controls[controls.length - 1];
    var active = document.activeElement;
    var outside = !modal.contains(active);
    if (event.shiftKey && (active === first || outside)) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (active === last || outside)) {
      event.preventDefault();
      first.focus();
    }
  });

  root.addEventListener("click", function (event) {
    var button = event.target.closest("[data-pb-open]");
    if (!button) { return; }
    var name = button.getAttribute("data-pb-open");
    if (name === "edit" && root.querySelector("select[data-pb-choices]")) {
      event.preventDefault();
      withChoices(function () { open(name, button); }, function () {
        if (button.form) { button.form.submit(); }
      });
      return;
    }
    if (!open(name, button)) { return; }
    event.preventDefault();
    if (name === "buy") {
      var form = button.form;
      var plan = form && form.elements.plan ? form.elements.plan.value : "";
      var properties = { source: button.getAttribute("data-pb-cta") || "", plan: plan };
      emit("profile:cta_buy_quota", properties);
      if (data.apiEvents) {
        fetch(data.apiEvents, {
          method: "POST", headers: headers(), credentials: "same-origin", keepalive: true,
          body: JSON.stringify({ event: "profile:cta_buy_quota", properties: properties })
        }).catch(function () { /* analytics must never disturb the page */ });
      }
    }
  });

  // A dialog the server rendered open (?dialog=...) becomes a real modal.
  if (data.dialog) { open(data.dialog, null); }

  // -- the edit form through PATCH /api/profile/me ---------------------------------------------
  var form = document.getElementById("pb-edit-form");
  var alertBox = document.getElementById("pb-edit-alert");

  function shown(name, field) {
    if (field.tagName === "SELECT") {
      return field.value ? field.options[field.selectedIndex].text : (name === "timezone" ? "UTC" : "—");
    }
    return field.value.trim() || (name === "first_name" ? "" : "—");
  }

  function setErrors(errors) {
    form.querySelectorAll("[data-pb-error-for]").forEach(function (box) {
      var name = box.getAttribute("data-pb-error-for");
      var field = form.elements[name];
      var messages = errors[name];
      if (messages) {
        box.textContent = [].concat(messages).join(" ");
        box.hidden = false;
        field.setAttribute("aria-invalid", "true");
        field.setAttribute("aria-describedby", box.id);
      } else {
        box.textContent = "";
        box.hidden = true;
        field.removeAttribute("aria-invalid");
        field.removeAttribute("aria-describedby");
      }
    });
  }

  function refuse(message) {
    alertBox.textContent = message;
    alertBox.hidden = false;
    toast(message, true);
  }

  if (form && data.apiProfile) {
    form.addEventListener("submit", function (event) {
      if (event.submitter && event.submitter.hasAttribute("data-pb-close")) { return; }
      event.preventDefault();
      var body = {};
      var previous = [];
      root.querySelectorAll("#pb-profile [data-pb-field]").forEach(function (target) {
        var name = target.getAttribute("data-pb-field");
        var field = form.elements[name];
        if (!field || target.tagName === "IMG") { return; }
        previous.push([target, target.textContent]);
        var text = shown(name, field);
        if (text) { target.textContent = text; }
      });
      ["first_name", "company", "country", "timezone", "avatar_url", "phone"].forEach(function (name) {
        var field = form.elements[name];
        if (field) { body[name] = field.value.trim() === "" ? null : field.value.trim(); }
      });
      function rollback() { previous.forEach(function (pair) { pair[0].textContent = pair[1]; }); }
      var dialog = dialogOf("edit");
      fetch(data.apiProfile, {
        method: "PATCH", headers: headers(), credentials: "same-origin", body: JSON.stringify(body)
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (answer) {
          if (response.ok && answer.success) {
            setErrors({});
            alertBox.hidden = true;
            if (dialog.open) { dialog.close(); }
            toast(data.msgSaved, false);
            emit("profile:update", { fields: Object.keys(body) });
            return;
          }
          rollback();
          var fields = answer.details && answer.details.fields;
          if (fields) { setErrors(fields); refuse(data.msgRefused); } else { refuse(answer.message || data.msgFailed); }
          var first = form.querySelector("[aria-invalid='true']");
          if (first) { first.focus(); }
        });
      }).catch(function () {
        rollback();
        refuse(data.msgFailed);
      });
    });
  }

  emit("profile:view", {});
})();
