// Renders OpenAPI 3 documents (the manager's, and a storage server's) as
// a readable page, offline: no CDN, no framework.

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function schemaText(schema, doc, depth = 0) {
  if (!schema) return "";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    if (depth > 2) return name;
    return schemaText(doc.components?.schemas?.[name], doc, depth + 1);
  }
  if (schema.type === "array" || schema.items) return `[${schemaText(schema.items, doc, depth + 1)}]`;
  if (schema.properties) {
    const pad = "  ".repeat(depth + 1);
    const lines = Object.entries(schema.properties).map(([k, v]) => {
      const note = v.description ? `  // ${v.description.split("\n")[0]}` : "";
      return `${pad}"${k}": ${schemaText(v, doc, depth + 1)}${note}`;
    });
    return `{\n${lines.join(",\n")}\n${"  ".repeat(depth)}}`;
  }
  const t = Array.isArray(schema.type) ? schema.type.join("|") : schema.type;
  return t || (schema.oneOf ? "one of…" : "value");
}

function render(doc, title) {
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "put", "delete", "patch"].includes(method)) continue;
      ops.push({ path, method, op });
    }
  }
  const byTag = {};
  for (const o of ops) (byTag[o.op.tags?.[0] || "other"] ||= []).push(o);
  let html = `<h2>${esc(title)}</h2><p class="muted">${esc(doc.info?.description || "")}</p>`;
  for (const [tag, list] of Object.entries(byTag)) {
    html += `<h3>${esc(tag)}</h3>`;
    for (const { path, method, op } of list) {
      const params = (op.parameters || []).map((p) => `<li><code>${esc(p.name)}</code> (${esc(p.in)}${p.required ? ", required" : ""}) ${esc(p.description || "")}</li>`).join("");
      const body = op.requestBody?.content && Object.entries(op.requestBody.content).map(([type, c]) => `<p>Body (<code>${esc(type)}</code>):</p><pre>${esc(schemaText(c.schema, doc))}</pre>`).join("");
      const responses = Object.entries(op.responses || {}).map(([code, r]) => {
        const c = r.content && Object.values(r.content)[0];
        return `<li><b>${esc(code)}</b> ${esc(r.description || "")}${c?.schema ? `<pre>${esc(schemaText(c.schema, doc))}</pre>` : ""}</li>`;
      }).join("");
      html += `<details class="op"><summary><span class="m ${method}">${method.toUpperCase()}</span><code>${esc(path)}</code>
        <span class="muted">${esc(op.summary || op.description || "")}</span>${op.security ? ' <span title="needs a bearer token">🔒</span>' : ""}</summary>
        <div class="body"><p>${esc(op.description || "")}</p>${params ? `<p>Parameters:</p><ul>${params}</ul>` : ""}${body || ""}
        <p>Responses:</p><ul>${responses}</ul></div></details>`;
    }
  }
  return html;
}

async function main() {
  const doc = await (await fetch("/api/openapi.json")).json();
  document.getElementById("title").textContent = doc.info?.title || "HTTP API reference";
  let html = render(doc, "Manager");
  try {
    const cluster = await (await fetch("/api/cluster")).json();
    const server = cluster.servers.find((s) => s.state === "up" && s.http);
    if (server) html += render(await (await fetch(`${server.http}/api/openapi.json`)).json(), `Storage server (${server.http})`);
  } catch { /* no server up: the manager's part stands alone */ }
  document.getElementById("doc").innerHTML = html;
}

main().catch((e) => { document.getElementById("doc").textContent = `Could not load the API document: ${e.message}`; });
