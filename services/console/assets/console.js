// recoup console: the pages work without this script. It keeps a form from being sent twice
// by a double click, and keeps the do-not-contact list current (server-sent events).
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

// The do-not-contact list: a snapshot (SNAPSHOT_BEGIN, LISTED..., SNAPSHOT_END) replaces the
// list, then ADDED and REMOVED change it. Text only: nothing received becomes markup.
function followDoNotContact(list) {
  const count = document.getElementById("dnc-count");
  const live = document.getElementById("dnc-live");
  let snapshot = null;
  const item = (id) => {
    const li = document.createElement("li");
    li.dataset.id = id;
    li.textContent = id;
    return li;
  };
  const find = (id) => [...list.children].find((li) => li.dataset.id === id);
  const counted = () => { count.textContent = String(list.children.length); };
  const source = new EventSource(list.dataset.live);
  source.onopen = () => { list.dataset.following = "1"; live.textContent = ""; };
  source.onmessage = (event) => {
    const update = JSON.parse(event.data);
    switch (update.kind) {
      case "SNAPSHOT_BEGIN": snapshot = []; break;
      case "LISTED": if (snapshot) snapshot.push(update.public_id); break;
      case "SNAPSHOT_END":
        list.replaceChildren(...(snapshot || []).map(item));
        snapshot = null;
        document.getElementById("dnc-more")?.remove();
        break;
      case "ADDED":
        if (!find(update.public_id)) list.append(item(update.public_id));
        list.dataset.lastChange = "ADDED " + update.public_id;
        break;
      case "REMOVED": {
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
    live.textContent = " Live updates paused: reconnecting…";
  };
}

const dnc = document.getElementById("dnc");
if (dnc && dnc.dataset.live && window.EventSource) followDoNotContact(dnc);
