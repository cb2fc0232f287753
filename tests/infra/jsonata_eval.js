// Renders Step Functions JSONata templates the way a state does: every string "{% expr %}" in a
// JSON value is replaced by the expression's value. Stricter than Step Functions: a field that
// evaluates to undefined is an error here, so a test cannot pass on a missing input field.
// stdin: [{"template": <json>, "bindings": {"states": {...}, "<variable>": ...}}, ...]
// stdout: [{"value": <json>} | {"error": "<message>"}, ...]
const jsonata = require("jsonata");

async function render(value, bindings, path) {
  if (typeof value === "string") {
    const match = value.match(/^\{%([\s\S]*)%\}$/);
    if (!match) return value;
    const result = await jsonata(match[1]).evaluate({}, bindings);
    if (result === undefined) throw new Error(`${path || "(root)"}: ${match[1].trim()} is undefined`);
    return result;
  }
  if (Array.isArray(value)) return Promise.all(value.map((v, i) => render(v, bindings, `${path}[${i}]`)));
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [key, v] of Object.entries(value)) out[key] = await render(v, bindings, path ? `${path}.${key}` : key);
    return out;
  }
  return value;
}

let raw = "";
process.stdin.on("data", (chunk) => (raw += chunk));
process.stdin.on("end", async () => {
  const results = [];
  for (const { template, bindings } of JSON.parse(raw)) {
    try {
      results.push({ value: await render(template, bindings, "") });
    } catch (err) {
      results.push({ error: String(err.message || err) });
    }
  }
  process.stdout.write(JSON.stringify(results));
});
