// The status page: what /api/v1/events says (the report of `tlwatch status --json`), shown
// as text (never as HTML: a file name is only ever text), and the buttons, which POST to the
// API. The token travels in an HttpOnly cookie this script never sees.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fill(list, items, empty, make) {
  list.replaceChildren(...(items.length ? items.map(make) : [el("li", "empty", empty)]));
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function bar(fraction) {
  const outer = el("div", "bar");
  const inner = el("span");
  inner.style.width = Math.max(0, Math.min(100, fraction * 100)).toFixed(1) + "%";
  outer.append(inner);
  return outer;
}

function health(report) {
  const d = report.daemon || {};
  const box = $("health");
  const problems = d.problems || [];
  let kind = "well";
  let head = "Well: footage goes up as it arrives";
  if (!d.running) { kind = "down"; head = "The daemon is not running"; }
  else if ((d.stuck || []).length) { kind = "stuck"; head = "A thread is stuck"; }
  else if (Object.keys(d.paused || {}).length) { kind = "paused"; head = "Paused"; }
  else if (Object.keys(d.offline || {}).length) { kind = "offline"; head = "A folder is offline"; }
  box.className = "health " + kind;
  const up = d.started_at ? "up " + seconds(Date.now() / 1000 - d.started_at) : "";
  box.replaceChildren(el("strong", "", head), el("span", "state", up ? " · " + up : ""));
  if (kind !== "well" && problems.length) {
    const list = el("ul");
    problems.forEach((p) => list.append(el("li", "", p)));
    box.append(list);
  }
  const paused = Boolean((d.paused || {}).user);
  $("pause").hidden = !d.running || paused;
  $("resume").hidden = !d.running || !paused;
}

function folders(report) {
  const names = Object.keys(report.folders || {});
  const offline = report.offline || {};
  const cards = names.map((name) => {
    const counts = report.folders[name];
    const card = el("div", "card");
    card.append(el("h3", "", name));
    if (offline[name]) card.append(el("div", "offline-tag", "offline: " + offline[name]));
    const batch = (report.batches || {})[name];
    if (batch) {
      card.append(bar(batch.done / batch.total));
      card.append(el("div", "state", batch.done + " of " + batch.total + " done in this batch"));
    }
    const said = Object.keys(counts).sort().map((s) => counts[s] + " " + s).join(", ");
    card.append(el("div", "state", said));
    return card;
  });
  $("folders").replaceChildren(...(cards.length ? cards : [el("p", "empty", "nothing recorded yet")]));
}

function flight(report) {
  const limits = report.limits || {};
  const items = [];
  (limits.uploads || []).forEach((u) => items.push(["upload", u]));
  (limits.transcodes || []).forEach((t) => items.push(["proxy", t]));
  (report.in_flight || []).filter((r) => r.state === "uploaded")
    .forEach((r) => items.push(["processing", r]));
  (report.indexing_waits || []).forEach((w) => items.push(["indexing", w]));
  const indexing = report.indexing || {};
  const going = (indexing.queued || 0) + (indexing.sending || 0) + (indexing.indexing || 0);
  if (going) items.push(["indexings", indexing]);
  fill($("flight"), items, "nothing in flight", ([kind, x]) => {
    const li = el("li");
    if (kind === "upload") {
      li.append(el("span", "name", x.file), el("span", "state", "uploading"));
      li.append(bar(x.size ? x.sent / x.size : 0));
      const rate = x.rate ? bytes(x.rate) + "/s" : "starting";
      const eta = x.eta_seconds !== null ? ", " + seconds(x.eta_seconds) + " left" : "";
      li.append(el("span", "detail", bytes(x.sent) + " of " + bytes(x.size) + " at " + rate + eta));
    } else if (kind === "proxy") {
      li.append(el("span", "name", x.file), el("span", "state", "making a proxy"));
      li.append(bar((x.percent || 0) / 100));
      const speed = x.speed ? x.speed.toFixed(1) + "× real time" : "";
      li.append(el("span", "detail", Math.round(x.percent || 0) + "% " + speed));
    } else if (kind === "processing") {
      li.append(el("span", "name", x.name), el("span", "state", x.asset_status || "processing"));
      li.append(el("span", "detail", "asset " + (x.asset_id || "")));
    } else if (kind === "indexings") {
      const said = ["queued", "sending", "indexing"].filter((s) => x[s])
        .map((s) => x[s] + " " + s).join(", ");
      li.append(el("span", "name", "indexing"), el("span", "state", said));
    } else {
      li.append(el("span", "name", x.file), el("span", "state", "indexing waits"));
      li.append(el("span", "detail", "into " + x.index_id + ": " + (x.reason || "")));
    }
    return li;
  });
}

function trouble(report) {
  fill($("trouble"), report.needs_a_look || [], "nothing failed or held", (row) => {
    const li = el("li");
    li.append(el("span", "name", row.name));
    if (row.state === "held") {
      li.append(el("span", "state", "held"));  // (it waits for a budget, or a fixed sidecar)
    } else {
      const retry = el("button", "retry", "Retry");
      retry.type = "button";
      retry.addEventListener("click", () => act("/api/v1/retry", { ids: [row.id] }));
      li.append(retry);
    }
    li.append(el("span", "detail", row.state + ": " + (row.reason || "")));
    return li;
  });
}

function ready(report) {
  fill($("ready"), report.ready || [], "nothing ready yet", (row) => {
    const li = el("li");
    li.append(el("span", "name", row.name), el("span", "state", bytes(row.size)));
    const indexes = (row.indexing || []).map((i) => i.index_id + " (" + i.state + ")");
    const detail = "asset " + (row.asset_id || "") + (indexes.length ? " · indexed into " + indexes.join(", ") : "");
    li.append(el("span", "detail", detail));
    return li;
  });
}

function limits(report) {
  const l = report.limits || {};
  const facts = [];
  Object.keys(l.pacing || {}).sort().forEach((family) => {
    const w = l.pacing[family];
    if (w.remaining !== null && w.remaining !== undefined) {
      facts.push(family + ": " + w.remaining + " of " + w.limit + " requests left in this window");
    }
  });
  if ("upload_rate_limit" in l) {
    facts.push("bandwidth: " + (l.upload_rate_limit ? bytes(l.upload_rate_limit) + "/s" : "no cap"));
  }
  if (l.upload_rate_limit_fleet) facts.push("the fleet's bandwidth: " + bytes(l.upload_rate_limit_fleet) + "/s");
  const budget = l.budget || {};
  if (budget.today_minutes !== undefined) {
    const of = budget.per_day_minutes !== null && budget.per_day_minutes !== undefined
      ? " of " + budget.per_day_minutes.toFixed(1) : "";
    facts.push("media minutes today: " + budget.today_minutes.toFixed(1) + of);
  }
  if (l.upload_workers_allowed) facts.push("upload workers sending: " + l.upload_workers_allowed);
  fill($("limits"), facts, "shown while the daemon runs", (text) => el("li", "", text));
}

function render(report) {
  health(report);
  folders(report);
  flight(report);
  trouble(report);
  ready(report);
  limits(report);
}

function say(text) {
  const said = $("said");
  said.textContent = text;
  said.hidden = !text;
}

async function act(path, body) {
  try {
    const answer = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    });
    if (answer.status === 403) say("Only the page opened with `tlwatch ui` may do that.");
    else if (!answer.ok) say("The daemon said: " + ((await answer.json()).error || answer.status));
    else say("");
  } catch (error) {
    say("The daemon cannot be reached: " + error);
  }
}

function connect() {
  const link = $("link");
  const events = new EventSource("/api/v1/events");
  events.addEventListener("status", (message) => {
    link.textContent = "live";
    link.className = "link live";
    render(JSON.parse(message.data));
  });
  events.onerror = () => {
    link.textContent = "reconnecting…";
    link.className = "link lost";
    if (events.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
}

$("pause").addEventListener("click", () => act("/api/v1/pause", {}));
$("resume").addEventListener("click", () => act("/api/v1/resume", {}));
connect();
