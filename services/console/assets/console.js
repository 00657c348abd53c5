// recoup console: the pages work without this script. It keeps a form from being sent twice
// by a double click, shows an upload's progress, and keeps the do-not-contact list current
// (server-sent events).
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.sent === "1") {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "1";
  for (const button of form.querySelectorAll("button[type=submit]")) {
    button.setAttribute("aria-busy", "true");
  }
});

// A page restored by the back button may be sent again.
window.addEventListener("pageshow", () => {
  for (const form of document.querySelectorAll("form[data-sent]")) delete form.dataset.sent;
  for (const button of document.querySelectorAll("button[aria-busy]")) {
    button.removeAttribute("aria-busy");
  }
});

// Borrowers of the do-not-contact list the page shows at most; the count covers all of them.
const DNC_SHOWN = 5000;

// The do-not-contact list: a snapshot (SNAPSHOT_BEGIN, LISTED..., SNAPSHOT_END) replaces the
// list, then ADDED and REMOVED change it. Text only: nothing received becomes markup.
function followDoNotContact(list) {
  const count = document.getElementById("dnc-count");
  const live = document.getElementById("dnc-live");
  let listed = new Set();
  let snapshot = null;
  const item = (id) => {
    const li = document.createElement("li");
    li.dataset.id = id;
    li.textContent = id;
    return li;
  };
  const find = (id) => [...list.children].find((li) => li.dataset.id === id);
  const counted = () => {
    count.textContent = String(listed.size);
    const hidden = listed.size - list.children.length;
    live.textContent = hidden > 0 ? ` (${hidden} more not shown)` : "";
  };
  const source = new EventSource(list.dataset.live);
  source.onopen = () => { list.dataset.following = "1"; live.textContent = ""; };
  source.onmessage = (event) => {
    const update = JSON.parse(event.data);
    switch (update.kind) {
      case "SNAPSHOT_BEGIN": snapshot = []; break;
      case "LISTED": if (snapshot) snapshot.push(update.public_id); break;
      case "SNAPSHOT_END":
        listed = new Set(snapshot || []);
        list.replaceChildren(...[...listed].slice(0, DNC_SHOWN).map(item));
        snapshot = null;
        document.getElementById("dnc-more")?.remove();
        break;
      case "ADDED":
        listed.add(update.public_id);
        if (!find(update.public_id) && list.children.length < DNC_SHOWN) {
          list.append(item(update.public_id));
        }
        list.dataset.lastChange = "ADDED " + update.public_id;
        break;
      case "REMOVED": {
        listed.delete(update.public_id);
        const li = find(update.public_id);
        if (li) li.remove();
        list.dataset.lastChange = "REMOVED " + update.public_id;
        break;
      }
      default: return;
    }
    list.dataset.sequence = String(update.sequence);
    if (!snapshot) counted();
  };
  source.onerror = () => {
    list.dataset.following = "0";
    live.textContent = source.readyState === EventSource.CLOSED
      ? " Live updates stopped: reload the page (you may have to sign in again)."
      : " Live updates paused: reconnecting…";
  };
}

const dnc = document.getElementById("dnc");
if (dnc && dnc.dataset.live && window.EventSource) followDoNotContact(dnc);

// An upload with its progress: XMLHttpRequest reports the bytes sent. Once all are sent the
// importer reads, checks and publishes every row before it answers with the report's page.
function uploadWithProgress(form) {
  const box = form.querySelector(".progress");
  const bar = form.querySelector("progress");
  const status = document.getElementById("upload-status");
  const mb = (bytes) => (bytes / 1048576).toFixed(1);
  const settle = () => {
    delete form.dataset.sent;
    for (const button of form.querySelectorAll("button[aria-busy]")) {
      button.removeAttribute("aria-busy");
    }
  };
  const fail = (why) => {
    let alert = document.getElementById("upload-refused");
    if (!alert) {
      alert = document.createElement("p");
      alert.id = "upload-refused";
      alert.className = "error";
      alert.setAttribute("role", "alert");
      form.before(alert);
    }
    alert.textContent = why;
    box.hidden = true;
    settle();
  };
  // Runs before the page-wide guard above (the form before the document): a form already
  // being sent is left to the guard.
  form.addEventListener("submit", (event) => {
    if (form.dataset.sent === "1") return;
    event.preventDefault();
    const max = Number(form.dataset.maxBytes || 0);
    const file = form.querySelector("input[type=file]").files[0];
    if (max && file && file.size > max) {
      // Not sent at all: the page-wide guard must not mark the form as being sent.
      event.stopPropagation();
      fail(`The file is ${mb(file.size)} MB: this recoup takes at most ${mb(max)} MB.`);
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      bar.max = e.total;
      bar.value = e.loaded;
      status.textContent = `${mb(e.loaded)} of ${mb(e.total)} MB sent`;
    };
    xhr.upload.onload = () => {
      bar.value = bar.max;
      status.textContent = "Sent. Importing: every row is checked and published…";
    };
    xhr.onload = () => {
      const to = new URL(xhr.responseURL || form.action, window.location.href);
      if (xhr.status === 200 && to.pathname !== "/imports") {
        window.location.assign(to.pathname + to.search);
        return;
      }
      const page = new DOMParser().parseFromString(xhr.responseText, "text/html");
      const why = page.querySelector("main .error");
      fail(why ? why.textContent : `The upload failed (HTTP ${xhr.status}).`);
    };
    xhr.onerror = () => fail("The upload did not reach recoup: check the connection and try again.");
    box.hidden = false;
    bar.value = 0;
    status.textContent = "";
    document.getElementById("upload-refused")?.remove();
    xhr.send(new FormData(form));
  });
}

for (const form of document.querySelectorAll("form[data-upload]")) uploadWithProgress(form);
