// Ferrite console: keeps the fleet table live from the server-sent
// `fleet` events (a JSON array of rows). Everything is written with
// textContent, never innerHTML, so node data stays text.
"use strict";

(function () {
  const table = document.getElementById("fleet");
  if (!table || !window.EventSource) return;
  const body = table.tBodies[0];
  const live = document.getElementById("live");
  const single = table.classList.contains("single");
  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

  function bytes(n) {
    let v = n, u = 0;
    while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
    return u === 0 ? n + " B" : v.toFixed(1) + " " + UNITS[u];
  }

  function progressText(p) {
    let t = bytes(p.received);
    if (p.total != null) t += " / " + bytes(p.total);
    t += " · " + bytes(p.rate) + "/s";
    if (p.eta_seconds != null) t += " · ETA " + p.eta_seconds + " s";
    return t;
  }

  function cell(tr, field) { return tr.querySelector('[data-f="' + field + '"]'); }

  function setProgress(td, p) {
    if (!p) { td.replaceChildren(); return; }
    let box = td.querySelector(".progress");
    if (!box) {
      box = document.createElement("div");
      box.className = "progress";
      box.append(document.createElement("progress"));
      const s = document.createElement("span");
      s.className = "ptext";
      box.append(s);
      td.replaceChildren(box);
    }
    const bar = box.querySelector("progress");
    bar.max = 100;
    if (p.percent != null) bar.value = p.percent; else bar.removeAttribute("value");
    box.querySelector(".ptext").textContent = progressText(p);
  }

  function newRow(r) {
    const tr = document.createElement("tr");
    tr.dataset.uuid = r.uuid;
    const first = document.createElement("td");
    first.dataset.label = "Name";
    const a = document.createElement("a");
    a.href = "/console/nodes/" + encodeURIComponent(r.uuid);
    a.dataset.f = "name";
    const id = document.createElement("div");
    id.className = "uuid";
    id.dataset.f = "uuid";
    first.append(a, id);
    tr.append(first);
    [["State", "provision_state"], ["Target", "target_provision_state"], ["Power", "power_state"],
     ["Maint.", "maintenance"], ["Step", "step"], ["Image write", "progress"]].forEach(function (c) {
      const td = document.createElement("td");
      td.dataset.label = c[0];
      td.dataset.f = c[1];
      if (c[1] === "progress") td.className = "pcell";
      tr.append(td);
    });
    return tr;
  }

  function update(tr, r) {
    cell(tr, "name").textContent = r.name || "";
    cell(tr, "uuid").textContent = r.uuid;
    ["provision_state", "target_provision_state", "power_state", "step"].forEach(function (f) {
      const td = cell(tr, f);
      const v = r[f] == null ? "" : String(r[f]);
      if (td.textContent !== v) td.textContent = v;
    });
    cell(tr, "maintenance").textContent = r.maintenance ? "yes" : "no";
    setProgress(cell(tr, "progress"), r.progress);
  }

  function apply(rows) {
    const existing = new Map();
    for (const tr of Array.from(body.rows)) existing.set(tr.dataset.uuid, tr);
    let prev = null;
    for (const r of rows) {
      let tr = existing.get(r.uuid);
      if (tr) existing.delete(r.uuid); else tr = newRow(r);
      update(tr, r);
      // Keep the server's order.
      const want = prev ? prev.nextSibling : body.firstChild;
      if (tr !== want) body.insertBefore(tr, want);
      prev = tr;
    }
    if (!single) existing.forEach(function (tr) { tr.remove(); });
  }

  // On a node's page, a new state or error also changes its history,
  // error and logs: those sections are read again from the server (its
  // escaped HTML, parsed, never built from event data).
  const REFRESHED = ["last-error-box", "history", "logs", "inventory"];
  let seen = null, refreshing = false;
  function refreshSections(rows) {
    if (!single || !rows.length) return;
    const key = rows[0].provision_state + "\u0000" + (rows[0].last_error || "");
    if (seen === null) { seen = key; return; }
    if (key === seen || refreshing) return;
    seen = key;
    refreshing = true;
    fetch(window.location.pathname, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html");
        REFRESHED.forEach(function (id) {
          const now = document.getElementById(id), next = fresh.getElementById(id);
          if (now && next) now.replaceWith(document.importNode(next, true));
        });
      })
      .catch(function () {})
      .finally(function () { refreshing = false; });
  }

  const source = new EventSource(table.dataset.events);
  source.addEventListener("fleet", function (e) {
    let rows;
    try { rows = JSON.parse(e.data); apply(rows); } catch (err) { return; }
    refreshSections(rows);
    if (live) { live.textContent = "live · " + new Date().toLocaleTimeString(); live.className = "live on"; }
  });
  source.addEventListener("gone", function (e) {
    source.close();
    if (live) { live.textContent = "gone: " + e.data; live.className = "live off"; }
  });
  source.onerror = function () {
    if (live) { live.textContent = "reconnecting…"; live.className = "live off"; }
  };
  // A page left behind closes its stream at once: browsers hold six
  // connections per host over HTTP/1.1, and a page kept for "back" would
  // otherwise keep one, until the next page's requests wait for it.
  // Coming back to such a page reloads it, with a fresh stream.
  window.addEventListener("pagehide", function () { source.close(); });
  window.addEventListener("pageshow", function (e) { if (e.persisted) window.location.reload(); });
})();

// Destructive actions: ask in the page, then tell the server it was
// confirmed (without the script, the server asks on a page of its own).
document.addEventListener("submit", function (e) {
  const form = e.target;
  const question = form.dataset ? form.dataset.confirm : null;
  if (!question) return;
  if (!window.confirm(question)) { e.preventDefault(); return; }
  if (!form.querySelector('input[name="confirm"]')) {
    const c = document.createElement("input");
    c.type = "hidden";
    c.name = "confirm";
    c.value = "yes";
    form.append(c);
  }
});
