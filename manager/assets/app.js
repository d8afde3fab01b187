// Dupla web console: plain ES module, no framework, no build step. It
// talks to the manager's JSON API (/api/...) with the bearer token kept in
// localStorage, and sends file bytes straight to a storage server's HTTP
// API (uploads staged by range, downloads with Range): never through the
// manager. See docs/web.md.

// Uncaught errors and unhandled rejections, kept (as well as shown in the
// browser's console as usual) so the browser test can require none.
window.duplaErrors = [];
addEventListener("error", (e) => window.duplaErrors.push(String(e.message)));
addEventListener("unhandledrejection", (e) => window.duplaErrors.push(String(e.reason)));

const $ = (sel) => document.querySelector(sel);
const main = $("#main");
const PART_BYTES = 4 << 20; // one PUT per 4 MiB: a dropped connection loses little
const POLL_MS = 2000;       // dashboard refresh
let timer = null;
let shown = 0; // bumped by each route(): a page whose route is gone stops updating

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const size = (n) => {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n, i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
};
const when = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
const token = () => localStorage.getItem("dupla.token");
const me = () => JSON.parse(localStorage.getItem("dupla.user") || "null");

function toast(text, bad = false) {
  const t = $("#toast");
  t.textContent = text;
  t.style.background = bad ? "#8e2a20" : "#141a2a";
  t.classList.add("show");
  clearTimeout(toast.t);
  toast.t = setTimeout(() => t.classList.remove("show"), 4000);
}

/** Call the manager's API; throws an Error with the server's message. */
async function api(path, { method = "GET", body, base = "" } = {}) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && token()) { signOut(false); throw new Error("your session ended: sign in again"); }
  if (!res.ok) {
    let msg = `${res.status}`;
    try { const e = await res.json(); msg = e.message || e.code || msg; } catch { /* not JSON */ }
    throw new Error(msg);
  }
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

function signOut(callServer = true) {
  if (callServer && token()) api("/api/logout", { method: "POST" }).catch(() => {});
  localStorage.removeItem("dupla.token");
  localStorage.removeItem("dupla.user");
  location.hash = "#/signin";
  route();
}

function chrome() {
  const user = me();
  $("#nav").hidden = !user;
  document.querySelectorAll("[data-admin]").forEach((a) => (a.hidden = !(user && user.role === "admin")));
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === location.hash));
  $("#who").innerHTML = user
    ? `<span>${esc(user.login)} <span class="pill ${user.role === "viewer" ? "suspect" : "up"}">${esc(user.role)}</span></span><button class="ghost" id="signout">Sign out</button>`
    : "";
  if (user) $("#signout").onclick = () => signOut();
}

// ---------- sign in and register ----------
function signinPage() {
  main.innerHTML = `<div class="auth panel"><h1>Sign in to Dupla</h1>
    <form id="f"><label>Login <input name="login" autocomplete="username" required></label>
    <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
    <button>Sign in</button><p class="error" id="err"></p>
    <p class="muted">No account? <a href="#/register">Register</a></p></form></div>`;
  $("#f").onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try {
      const s = await api("/api/login", { method: "POST", body: { login: f.get("login"), password: f.get("password") } });
      localStorage.setItem("dupla.token", s.token);
      localStorage.setItem("dupla.user", JSON.stringify(s.user));
      location.hash = "#/dashboard";
    } catch (err) { $("#err").textContent = err.message; }
  };
  $("input[name=login]").focus();
}

function registerPage() {
  main.innerHTML = `<div class="auth panel"><h1>Create an account</h1>
    <form id="f"><label>Login (3–32 of a-z 0-9 _ . -) <input name="login" required></label>
    <label>Password (8 characters or more) <input name="password" type="password" autocomplete="new-password" required></label>
    <label>First names <input name="first_names" required></label>
    <label>Last names <input name="last_names" required></label>
    <label>Age <input name="age" type="number" min="1" max="150" required></label>
    <label>Gender <input name="gender" required></label>
    <button>Register</button><p class="error" id="err"></p>
    <p class="muted">Have one? <a href="#/signin">Sign in</a></p></form></div>`;
  $("#f").onsubmit = async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(e.target));
    f.age = Number(f.age);
    try {
      await api("/api/register", { method: "POST", body: f });
      toast("Registered: sign in now");
      location.hash = "#/signin";
    } catch (err) { $("#err").textContent = err.message; }
  };
}

// ---------- dashboard ----------
async function dashboardPage() {
  main.innerHTML = `<h1>Cluster</h1><div class="grid" id="cards"></div>
    <div class="panel scroll"><table><thead><tr><th>Server</th><th>State</th><th class="num">Used</th><th>Capacity</th>
    <th class="num">Files</th><th class="num">Transfers</th><th class="num">Sessions</th><th class="num hide-sm">Seen</th></tr></thead>
    <tbody id="servers"></tbody></table></div><p class="muted">Updated every ${POLL_MS / 1000} s.</p>`;
  const draw = async () => {
    const c = await api("/api/cluster");
    const up = c.servers.filter((s) => s.state === "up").length;
    $("#cards").innerHTML = [
      ["Servers up", `${up} / ${c.servers.length}`], ["Files", c.files], ["Stored (one copy)", size(c.bytes)],
      ["Under-replicated", c.under_replicated], ["Repaired", `${c.repaired_files} (${size(c.repaired_bytes)})`], ["Sessions", c.sessions],
    ].map(([k, v]) => `<div class="card"><div class="v">${esc(v)}</div><div class="k">${esc(k)}</div></div>`).join("");
    $("#servers").innerHTML = c.servers.map((s) => {
      const pct = s.capacity ? Math.min(100, (100 * s.used) / s.capacity) : 0;
      return `<tr><td>${esc(s.addr)}</td><td><span class="pill ${esc(s.state)}">${esc(s.state)}</span></td>
        <td class="num">${size(s.used)}</td><td><div class="bar" title="${pct.toFixed(1)}% of ${size(s.capacity)}"><span style="width:${pct}%"></span></div></td>
        <td class="num">${s.files}</td><td class="num">${s.active_transfers}</td><td class="num">${s.sessions}</td>
        <td class="num hide-sm">${s.last_seen_ms_ago == null ? "never" : (s.last_seen_ms_ago / 1000).toFixed(1) + " s"}</td></tr>`;
    }).join("");
  };
  const mine = shown;
  await draw();
  if (mine !== shown) return; // the user moved on while it loaded
  timer = setInterval(() => draw().catch((e) => toast(e.message, true)), POLL_MS);
}

/** A storage server's HTTP base URL: the assigned one if up, else any. */
async function serverUrl() {
  const c = await api("/api/cluster");
  const up = c.servers.filter((s) => s.state === "up" && s.http);
  if (!up.length) throw new Error("no storage server with an HTTP API is up");
  return up[Math.floor(Math.random() * up.length)].http;
}

function downloadLink(base, name, version) {
  const q = new URLSearchParams({ name, token: token() });
  if (version) q.set("version", version);
  return `${base}/api/files/content?${q}`;
}

// ---------- files ----------
async function filesPage() {
  main.innerHTML = `<h1>Files</h1><form class="inline" id="f">
    <label>Search <input name="q" placeholder="name, *.png…"></label>
    <label>Min size (bytes) <input name="min_size" type="number" min="0"></label>
    <label>Max size (bytes) <input name="max_size" type="number" min="0"></label>
    <label>Since <input name="after" type="date"></label>
    <label>Before <input name="before" type="date"></label>
    <button>Search</button></form>
    <div class="panel scroll"><p class="muted" id="count"></p><table><thead><tr><th>Name</th><th class="num">Size</th><th class="hide-sm">Committed</th>
    <th class="num">Version</th><th class="hide-sm">Holders</th><th></th></tr></thead><tbody id="rows"></tbody></table></div>`;
  const load = async () => {
    const f = new FormData($("#f"));
    const q = new URLSearchParams();
    for (const k of ["q", "min_size", "max_size"]) if (f.get(k)) q.set(k, f.get(k));
    if (f.get("after")) q.set("after_ms", Date.parse(f.get("after")));
    if (f.get("before")) q.set("before_ms", Date.parse(f.get("before")));
    const [page, base] = await Promise.all([api(`/api/files?${q}`), serverUrl().catch(() => "")]);
    $("#count").textContent = `${page.total} file(s)`;
    $("#rows").innerHTML = page.files.map((f) => `<tr><td>${esc(f.name)}</td><td class="num">${size(f.size)}</td>
      <td class="hide-sm">${when(f.committed_unix_ms)}</td><td class="num">${f.version}</td><td class="hide-sm">${esc(f.holders.join(", "))}</td>
      <td>${base ? `<a href="${esc(downloadLink(base, f.name))}" download>Download</a>` : ""}
      ${me().role !== "viewer" ? `<button class="danger" data-rm="${esc(f.name)}">Delete</button>` : ""}</td></tr>`).join("");
    document.querySelectorAll("[data-rm]").forEach((b) => (b.onclick = async () => {
      if (!confirm(`Delete ${b.dataset.rm}?`)) return;
      try { await api(`/api/file?name=${encodeURIComponent(b.dataset.rm)}`, { method: "DELETE" }); toast("Deleted"); load(); }
      catch (e) { toast(e.message, true); }
    }));
  };
  $("#f").onsubmit = (e) => { e.preventDefault(); load().catch((err) => toast(err.message, true)); };
  await load();
}

// ---------- snapshots ----------
async function snapshotsPage() {
  const list = await api("/api/snapshots");
  main.innerHTML = `<h1>Snapshots</h1><div class="panel scroll"><table><thead><tr><th>Id</th><th>Time</th><th class="hide-sm">Host</th>
    <th class="hide-sm">Paths</th><th class="num">Files</th><th class="num">Size</th></tr></thead><tbody>
    ${list.map((s) => `<tr><td><a href="#/snapshot/${esc(s.id)}">${esc(s.id)}</a></td><td>${when(s.time_unix_ms)}</td>
      <td class="hide-sm">${esc(s.host)}</td><td class="hide-sm">${esc(s.paths.join(" "))}</td><td class="num">${s.files}</td><td class="num">${size(s.bytes)}</td></tr>`).join("")
    || `<tr><td colspan="6" class="muted">No snapshots yet: <code>dupla backup DIR</code> records one.</td></tr>`}
    </tbody></table></div>`;
}

async function snapshotPage(id) {
  const [entries, base] = await Promise.all([api(`/api/snapshots/${encodeURIComponent(id)}/entries`), serverUrl().catch(() => "")]);
  const tar = base ? `${base}/api/snapshots/${encodeURIComponent(id)}/archive?${new URLSearchParams({ token: token() })}` : "";
  main.innerHTML = `<h1>Snapshot ${esc(id)}</h1><form class="inline" id="f"><label>Filter <input id="filter" placeholder="path contains…"></label>
    ${tar ? `<a href="${esc(tar)}" download>Restore all as an archive (.tar)</a>` : ""}</form>
    <div class="panel scroll"><table><thead><tr><th>Path</th><th>Kind</th><th class="num">Size</th><th class="hide-sm">Modified</th><th></th></tr></thead>
    <tbody id="rows"></tbody></table></div>`;
  const draw = () => {
    const want = $("#filter").value.toLowerCase();
    $("#rows").innerHTML = entries.filter((e) => e.path.toLowerCase().includes(want)).map((e) => `<tr><td>${esc(e.path)}</td><td>${esc(e.kind)}</td>
      <td class="num">${e.kind === "file" ? size(e.size) : ""}</td><td class="hide-sm">${when(Math.floor(e.mtime_ns / 1e6))}</td>
      <td>${e.kind === "file" && base ? `<a href="${esc(downloadLink(base, e.path, e.version))}" download>Restore</a>` : ""}</td></tr>`).join("");
  };
  $("#filter").oninput = draw;
  $("#f").onsubmit = (e) => e.preventDefault();
  draw();
}

// ---------- upload (resumable across reloads) ----------
const pendingKey = "dupla.upload";

function uploadPage() {
  const pending = JSON.parse(localStorage.getItem(pendingKey) || "null");
  main.innerHTML = `<h1>Upload</h1><div class="panel">
    ${pending ? `<p id="resume">An upload of <b>${esc(pending.name)}</b> (${size(pending.size)}) was interrupted.
      Choose the same file again to continue where it stopped, or <button class="ghost" id="forget">forget it</button>.</p>` : ""}
    <form class="inline" id="f"><label>File <input type="file" id="file" required></label>
    <label>Name in the backup <input id="name" placeholder="as the file is named"></label><button id="go">Upload</button></form>
    <progress id="bar" max="1" value="0" hidden></progress><p id="state" class="muted"></p></div>`;
  if (pending) $("#forget").onclick = async () => {
    await fetch(`${pending.url}/api/uploads/${pending.id}`, { method: "DELETE", headers: { Authorization: `Bearer ${token()}` } }).catch(() => {});
    localStorage.removeItem(pendingKey);
    uploadPage();
  };
  $("#file").onchange = () => { if (!$("#name").value) $("#name").value = $("#file").files[0]?.name || ""; };
  $("#f").onsubmit = async (e) => {
    e.preventDefault();
    const file = $("#file").files[0];
    const name = $("#name").value || file.name;
    $("#go").disabled = true;
    try { await upload(file, name); } catch (err) { $("#state").textContent = err.message; $("#state").className = "error"; }
    $("#go").disabled = false;
  };
}

/** PUT one slice with XHR (fetch reports no upload progress). */
function putSlice(url, blob, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* empty */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(Object.assign(new Error(body?.message || `HTTP ${xhr.status}`), { status: xhr.status }));
    };
    xhr.onerror = () => reject(new Error("the connection dropped: upload again to resume"));
    xhr.send(blob);
  });
}

async function upload(file, name) {
  const bar = $("#bar"), state = $("#state");
  bar.hidden = false;
  state.className = "muted";
  let pending = JSON.parse(localStorage.getItem(pendingKey) || "null");
  const same = pending && pending.name === name && pending.size === file.size && pending.modified === file.lastModified;
  let offset = 0;
  if (same) {
    try {
      const s = await api(`/api/uploads/${pending.id}`, { base: pending.url });
      offset = s.offset;
    } catch { pending = null; }
  } else pending = null;
  if (!pending) {
    const target = await api("/api/uploads", { method: "POST", body: { name, size: file.size } });
    const staged = await api("/api/uploads", { method: "POST", body: { name, size: file.size }, base: target.url });
    pending = { id: staged.id, url: target.url, name, size: file.size, modified: file.lastModified };
    localStorage.setItem(pendingKey, JSON.stringify(pending));
  }
  const started = Date.now(), from = offset;
  let result = null, stale = 0;
  do {
    const end = Math.min(offset + PART_BYTES, file.size);
    try {
      result = await putSlice(`${pending.url}/api/uploads/${pending.id}?offset=${offset}`, file.slice(offset, end), (sent) => {
        const done = offset + sent;
        bar.value = file.size ? done / file.size : 1;
        const rate = (done - from) / Math.max(0.001, (Date.now() - started) / 1000);
        state.textContent = `${size(done)} of ${size(file.size)} · ${size(rate)}/s`;
      });
      offset = result.offset;
    } catch (err) {
      // A stale offset (an earlier request of ours landed meanwhile): ask
      // where the server is and go on from there.
      if (err.status !== 409 || ++stale > 3) throw err;
      offset = (await api(`/api/uploads/${pending.id}`, { base: pending.url })).offset;
      result = { done: false };
    }
  } while (!result.done);
  localStorage.removeItem(pendingKey);
  bar.value = 1;
  const f = result.file;
  state.textContent = `Backed up ${f.name}: ${size(f.size)}, ${f.copies} copies on ${f.holders.join(" and ")}, blake3 ${f.blake3.slice(0, 16)}…`;
  toast("Upload complete");
}

// ---------- admin: users ----------
async function usersPage() {
  const users = await api("/api/users");
  main.innerHTML = `<h1>Users</h1><p><button class="ghost" id="csv">Export usage (CSV)</button></p>
    <div class="panel scroll"><table><thead><tr><th>Login</th><th class="hide-sm">Name</th><th>State</th><th>Role</th>
    <th class="num">Used</th><th class="num">Quota</th><th></th></tr></thead><tbody>
    ${users.map((u) => `<tr><td>${esc(u.user.login)}</td><td class="hide-sm">${esc(u.user.first_names)} ${esc(u.user.last_names)}</td>
      <td><span class="pill ${esc(u.state)}">${esc(u.state)}</span></td>
      <td><select data-role="${esc(u.user.login)}" aria-label="role of ${esc(u.user.login)}">${["admin", "user", "viewer"].map((r) => `<option value="${r}" ${r === u.user.role ? "selected" : ""}>${r}</option>`).join("")}</select></td>
      <td class="num">${size(u.quota.used_bytes)} · ${u.quota.used_files} files</td>
      <td class="num"><input data-quota="${esc(u.user.login)}" type="number" min="0" value="${u.quota.quota_bytes}" title="bytes; 0 is unlimited" style="width:9rem"></td>
      <td><button class="danger" data-del="${esc(u.user.login)}">Delete</button></td></tr>`).join("")}
    </tbody></table></div>`;
  document.querySelectorAll("[data-role]").forEach((s) => (s.onchange = async () => {
    try { await api(`/api/users/${s.dataset.role}/role`, { method: "PUT", body: { role: s.value } }); toast(`${s.dataset.role} is now ${s.value}`); }
    catch (e) { toast(e.message, true); }
  }));
  document.querySelectorAll("[data-quota]").forEach((i) => (i.onchange = async () => {
    try { await api(`/api/users/${i.dataset.quota}/quota`, { method: "PUT", body: { bytes: Number(i.value), files: 0 } }); toast("Quota saved"); }
    catch (e) { toast(e.message, true); }
  }));
  document.querySelectorAll("[data-del]").forEach((b) => (b.onclick = async () => {
    if (!confirm(`Delete ${b.dataset.del} and all their backups?`)) return;
    try { await api(`/api/users/${b.dataset.del}`, { method: "DELETE" }); toast("Deleted"); usersPage(); }
    catch (e) { toast(e.message, true); }
  }));
  $("#csv").onclick = async () => {
    const text = await api("/api/stats/usage.csv");
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: "dupla-usage.csv" });
    a.click();
  };
}

// ---------- statistics ----------
// A line chart of `values` over `times` (unix ms), as inline SVG: no
// library, no build step. `fmt` labels the top of the scale.
function lineChart(title, times, values, fmt) {
  const w = 600, h = 120, pad = 4;
  const samples = values.length;
  // One sample (a manager just started): a level line, not an invisible point.
  if (samples === 1) { times = [times[0] - 1, times[0]]; values = [values[0], values[0]]; }
  const max = Math.max(1, ...values);
  const t0 = times[0] || 0, span = Math.max(1, (times[times.length - 1] || 0) - t0);
  const points = values.map((v, i) =>
    `${(pad + ((times[i] - t0) / span) * (w - 2 * pad)).toFixed(1)},${(h - pad - (v / max) * (h - 2 * pad)).toFixed(1)}`).join(" ");
  const minutes = Math.round(span / 60000);
  return `<div class="panel chart"><h2>${esc(title)}</h2>
    <svg class="line" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img"
      aria-label="${esc(title)}: ${samples} samples, highest ${esc(fmt(max))}">
      <polyline fill="none" stroke="currentColor" stroke-width="2" vector-effect="non-scaling-stroke" points="${points}"/></svg>
    <div class="axis"><span>${samples > 1 ? `${minutes} min ago` : "since the manager started"}</span><span>top ${esc(fmt(max))}</span><span>now</span></div></div>`;
}

async function statsPage() {
  const s = await api("/api/stats");
  const max = Math.max(1, ...s.usage.map((u) => u.quota.used_bytes));
  const h = s.history;
  const times = h.map((x) => x.unix_ms);
  // Repair activity: bytes copied in each interval (the counter's growth).
  const repaired = h.map((x, i) => (i ? Math.max(0, x.repaired_bytes - h[i - 1].repaired_bytes) : 0));
  main.innerHTML = `<h1>Statistics</h1><div class="grid">
    ${[["Users", s.users], ...Object.entries(s.users_by_state), ["Chat deliveries", s.chat_deliveries], ["Stored", size(s.cluster.bytes)]]
      .map(([k, v]) => `<div class="card"><div class="v">${esc(v)}</div><div class="k">${esc(k)}</div></div>`).join("")}</div>
    <div class="panel chart"><h2>Stored bytes per user</h2>
    ${s.usage.map((u) => `<div class="row"><span>${esc(u.user.login)}</span><div class="bar"><span style="width:${(100 * u.quota.used_bytes) / max}%"></span></div>
      <span class="num">${size(u.quota.used_bytes)}</span></div>`).join("")}</div>
    ${lineChart("Transfers over time", times, h.map((x) => x.transfers), String)}
    ${lineChart("Repair activity (bytes copied per 10 s)", times, repaired, size)}
    ${lineChart("Under-replicated files", times, h.map((x) => x.under_replicated), String)}
    ${lineChart("Stored bytes", times, h.map((x) => x.bytes), size)}`;
}

// ---------- chat: the rooms of `dupla chat` ----------
let chat = null; // {id, alive}

async function leaveChat() {
  if (!chat) return;
  const id = chat.id;
  chat.alive = false;
  chat = null;
  await api(`/api/chat/${id}`, { method: "DELETE" }).catch(() => {});
}

async function chatPage() {
  main.innerHTML = `<h1>Chat</h1><div class="panel"><div id="log" class="chatlog" aria-live="polite"></div>
    <form class="inline" id="f"><label style="flex:1">Message or command <input id="line" autocomplete="off"
      placeholder="hello · #cR room · #gR room · #eR · #lR · #dR room · #show users · #\\private user text · #exit"></label>
    <button>Send</button></form></div>`;
  const log = $("#log");
  const show = (e) => {
    const p = document.createElement("p");
    p.className = e.kind;
    p.textContent = e.kind === "message" ? `${e.from}: ${e.text}` : e.kind === "private" ? `[private] ${e.from}: ${e.text}` : `* ${e.text}`;
    log.append(p);
    log.scrollTop = log.scrollHeight;
  };
  await leaveChat();
  const session = { id: (await api("/api/chat", { method: "POST" })).id, alive: true };
  chat = session;
  $("#f").onsubmit = async (e) => {
    e.preventDefault();
    const line = $("#line").value;
    if (!line) return;
    $("#line").value = "";
    try { await api(`/api/chat/${session.id}/lines`, { method: "POST", body: { line } }); } catch (err) { toast(err.message, true); }
  };
  $("#line").focus();
  let after = 0;
  while (session.alive) {
    try {
      const page = await api(`/api/chat/${session.id}/events?after=${after}`);
      after = page.last;
      page.events.forEach(show);
      if (page.closed) { show({ kind: "notice", text: page.closed }); session.alive = false; }
    } catch (err) {
      if (session.alive) show({ kind: "notice", text: err.message });
      session.alive = false;
    }
  }
}

// ---------- router ----------
async function route() {
  clearInterval(timer);
  shown++;
  if (location.hash !== "#/chat") leaveChat();
  const hash = location.hash || "#/dashboard";
  chrome();
  if (!token() && !["#/signin", "#/register"].includes(hash)) { location.hash = "#/signin"; return; }
  try {
    if (hash === "#/signin") signinPage();
    else if (hash === "#/register") registerPage();
    else if (hash === "#/files") await filesPage();
    else if (hash === "#/snapshots") await snapshotsPage();
    else if (hash.startsWith("#/snapshot/")) await snapshotPage(decodeURIComponent(hash.slice(11)));
    else if (hash === "#/upload") uploadPage();
    else if (hash === "#/users") await usersPage();
    else if (hash === "#/stats") await statsPage();
    else if (hash === "#/chat") await chatPage();
    else await dashboardPage();
  } catch (e) {
    main.innerHTML = `<div class="panel error">${esc(e.message)}</div>`;
  }
  main.focus();
}

window.addEventListener("hashchange", route);
route();
