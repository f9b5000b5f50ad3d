// /docs: the routes of /openapi.json, listed with this origin's own script only (no CDN).
import { h } from "./dom.js";

const METHODS = ["get", "post", "put", "patch", "delete"];

function operation(path, method, op) {
  const params = (op.parameters || []).map((p) => `${p.name} (${p.in})`).join(", ");
  const body = op.requestBody ? JSON.stringify(op.requestBody.content?.["application/json"]?.schema || {}) : "";
  return h("details", { className: "card" },
    h("summary", null, h("code", null, `${method.toUpperCase()} ${path}`), " ", op.summary || ""),
    params ? h("p", null, "parameters: ", params) : null,
    body ? h("pre", null, body) : null,
  );
}

async function main() {
  const answer = await fetch("/openapi.json");
  const doc = await answer.json();
  const routes = document.getElementById("routes");
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      if (item[method]) routes.append(operation(path, method, item[method]));
    }
  }
}

main();
