// costplan serve: the page. Reads the settings, keeps them in the URL, asks the API (the CLI's --json
// objects) and draws the answer; charts are inline SVG drawn here, so nothing is fetched from elsewhere.
// Every number shown carries its raw value in data-value, the API's number unchanged.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const MAIN = new Set(["model", "method", "gpu", "tokens"]);
const GROUPS = [["estimate", "This estimate"], ["compare", "Every approach"], ["plan", "Plan search"]];
const PLAN_FIELDS = [
  {name: "plan-gpu", help: "GPU types the plan searches, a comma list [every priced GPU]"},
  {name: "plan-method", help: "Methods the plan (and the report's plan) searches, a comma list [the method above]"},
];
const FINE_TUNING = new Set(["prompt", "prefix", "lora", "qlora", "full"]);
const TERM_COLOURS = {
  weights: "#4e79a7", gradients: "#f28e2b", master_weights: "#e15759", optimizer_states: "#76b7b2",
  fp32_gradient_copies: "#59a14f", optimizer_step_temporaries: "#edc948", activations: "#b07aa1",
  logits: "#ff9da7", layer_backward: "#9c755f", dequant_workspace: "#bab0ac", zero3_gather: "#86bcb6",
  kv_cache: "#d37295", weight_copies: "#a0cbe8", load_quantization: "#8cd17d", overhead: "#d9d9d9",
};

let OPTIONS = {};        // command -> [{name, flag, default, choices, help}], from /api/options
let GPUS = {};           // key -> the row of /api/gpus
let MODEL_ALIASES = {};  // a preset's key and aliases -> its key
let upload = null;       // the chosen config.json (a File), sent with every request
let generation = 0;      // the newest update; older answers are dropped
let timer = null;

// --- formatting ---------------------------------------------------------------------------------

const GIB = 2 ** 30;
function fmtGiB(bytes) { return `${(bytes / GIB).toFixed(1)} GiB`; }
function fmtUsd(usd) {
  if (usd === null || usd === undefined) return "no price";
  if (usd >= 1000) return "$" + Math.round(usd).toLocaleString("en-US");
  if (usd >= 1) return "$" + usd.toFixed(2);
  return "$" + usd.toPrecision(2);
}
function fmtHours(hours) {
  if (hours < 1 / 60) return `${(hours * 3600).toPrecision(2)} s`;
  if (hours < 1) return `${(hours * 60).toFixed(hours * 60 < 10 ? 1 : 0)} min`;
  if (hours < 48) return `${hours.toFixed(hours < 10 ? 2 : 1)} h`;
  return `${(hours / 24).toFixed(1)} days`;
}
function fmtCount(n) {
  for (const [size, suffix] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
    if (Math.abs(n) >= size) return `${+(n / size).toPrecision(3)}${suffix}`;
  }
  return `${+n.toPrecision(3)}`;
}
function fmtNumber(x, digits = 3) {
  return x === null || x === undefined ? "–" : (+x.toPrecision(digits)).toLocaleString("en-US");
}
function label(key) { return key.replace(/_/g, " "); }

// --- small DOM helpers --------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}
function s(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}
function ensureOption(select, value) {
  if (value && ![...select.options].some((o) => o.value === value)) select.append(h("option", {value}, value));
}

// --- settings: the form, the URL and what each command takes -------------------------------------

function buildAdvanced() {
  const box = $("advanced-fields");
  const seen = new Set(MAIN);
  for (const [command, title] of GROUPS) {
    const group = h("fieldset", {"data-group": command}, h("legend", {}, title));
    const fields = (OPTIONS[command] || []).filter((o) => !seen.has(o.name) && !(command === "plan" &&
      (o.name === "gpu" || o.name === "method")));
    if (command === "plan") fields.push(...PLAN_FIELDS);
    for (const option of fields) {
      seen.add(option.name);
      group.append(field(option));
    }
    if (group.children.length > 1) box.append(group);
  }
}

function field(option) {
  const id = `opt-${option.name}`;
  let input;
  if (option.flag || option.choices) {
    input = h("select", {id, "data-option": option.name});
    const fallback = option.flag ? (option.default === true ? "on" : option.default === false ? "off" : "auto")
      : (option.default ?? "auto");
    input.append(h("option", {value: ""}, `default (${fallback})`));
    const values = option.flag ? [["true", "on"], ["false", "off"]] : option.choices.map((c) => [c, c]);
    for (const [value, text] of values) input.append(h("option", {value}, text));
  } else {
    const placeholder = option.default === null || option.default === undefined ? "auto" : String(option.default);
    input = h("input", {id, type: "text", "data-option": option.name, placeholder, spellcheck: "false"});
  }
  return h("label", {for: id, title: option.help || ""}, h("span", {class: "name"}, option.name), input,
    option.help ? h("small", {}, option.help) : "");
}

function readState() {
  const state = {};
  const hub = $("hub").value.trim();
  if (!upload) state.model = hub || $("model").value;
  state.method = $("method").value;
  state.gpu = $("gpu").value;
  const tokens = $("tokens").value.trim();
  if (tokens) state.tokens = tokens;
  for (const input of document.querySelectorAll("#advanced-fields [data-option]")) {
    const value = input.value.trim();
    if (value) state[input.dataset.option] = value;
  }
  return state;
}

// A preset or GPU named by an alias selects its row (7b is llama-2-7b, h100 is h100-sxm); an unknown name
// stays as typed, so that the API answers it with its did-you-mean.
function setChoice(name, value) {
  if (!value) return;
  const select = $(name);
  const values = [...select.options].map((o) => o.value);
  const key = name === "model" ? MODEL_ALIASES[value.toLowerCase()]
    : values.find((v) => v === value) || values.find((v) => v.startsWith(value.toLowerCase() + "-"));
  if (key && values.includes(key)) { select.value = key; return; }
  ensureOption(select, value);
  select.value = value;
}

function applyUrl() {
  const params = new URLSearchParams(window.location.search);
  const model = params.get("model");
  if (model && model.includes("/")) $("hub").value = model;
  else setChoice("model", model);
  setChoice("method", params.get("method"));
  setChoice("gpu", params.get("gpu"));
  $("tokens").value = params.get("tokens") || "";
  let advanced = false;
  for (const input of document.querySelectorAll("#advanced-fields [data-option]")) {
    const value = params.get(input.dataset.option);
    if (value === null) continue;
    if (input.tagName === "SELECT") ensureOption(input, value);
    input.value = value;
    advanced = true;
  }
  if (advanced) $("advanced").open = true;
}

function syncUrl(state) {
  const query = new URLSearchParams(state).toString();
  const url = `${window.location.pathname}${query ? "?" + query : ""}`;
  window.history.replaceState(null, "", url);
  $("share-url").value = window.location.href;
}

function argsFor(command, state) {
  const names = new Set((OPTIONS[command] || []).map((o) => o.name));
  const args = {};
  for (const [k, v] of Object.entries(state)) if (names.has(k)) args[k] = v;
  return args;
}

function compareArgs(state) {
  const args = argsFor("compare", state);
  // the estimate's token count means each method's own budget: give it to the matching row
  if (state.tokens && !FINE_TUNING.has(state.method)) {
    delete args.tokens;
    if (state.method === "cpt" && !state["cpt-tokens"]) args["cpt-tokens"] = state.tokens;
    if (state.method === "inference" && !state["eval-tokens"]) args["eval-tokens"] = state.tokens;
  }
  return args;
}

function planArgs(state, estimate) {
  const args = argsFor("plan", state);
  delete args.gpu;
  if (state["plan-gpu"]) args.gpu = state["plan-gpu"];
  args.method = state["plan-method"] || state.method;
  args.tokens = state.tokens || String(estimate.tokens);
  return args;
}

function reportArgs(state) {
  const args = argsFor("report", state);
  if (state["plan-method"]) args["plan-methods"] = state["plan-method"];
  return args;
}

// --- the API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function request(path, params) {
  const url = `${path}?${new URLSearchParams(params)}`;
  const init = {};
  if (upload) {
    const form = new FormData();
    form.append("config", upload, upload.name);
    Object.assign(init, {method: "POST", body: form});
  }
  const response = await fetch(url, init);
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new ApiError(message, response.status);
  }
  return response;
}
async function api(command, params) { return (await request(`/api/${command}`, params)).json(); }

// --- drawing --------------------------------------------------------------------------------------

function showError(box, error) {
  box.hidden = !error;
  box.textContent = error ? error.message : "";
  if (error) box.dataset.status = error.status || ""; else delete box.dataset.status;
}

function renderSummary(est) {
  const section = $("summary-section");
  Object.assign(section.dataset, {model: est.model, method: est.method, gpu: est.gpu});
  const gpu = GPUS[est.gpu];
  $("summary-title").textContent = `${est.model}: ${est.method} on ${gpu ? gpu.name : est.gpu}`;
  const fit = $("fit");
  fit.dataset.fits = String(est.fits);
  fit.className = est.fits ? "fit yes" : "fit no";
  fit.textContent = est.fits ? `Fits: ${est.gpus} GPU${est.gpus > 1 ? "s" : ""}` : `Does not fit: ${est.fit_problem}`;
  const range = (values, fmt) => values ? ` (${fmt(values[0])} to ${fmt(values[1])})` : "";
  const items = [
    ["gpus", "GPUs", est.gpus, `${est.gpus} × ${est.gpu}`],
    ["wall_hours", "Wall time", est.wall_hours, fmtHours(est.wall_hours) + range(est.wall_hours_range, fmtHours)],
    ["cost_usd", "Cost", est.cost_usd, fmtUsd(est.cost_usd) + range(est.cost_usd_range, fmtUsd)],
    ["gpu_hours", "GPU-hours", est.gpu_hours, fmtNumber(est.gpu_hours)],
    ["energy_kwh", "Energy", est.energy_kwh, est.energy_kwh === null ? "unknown (no board power listed for the GPU)"
      : `${fmtNumber(est.energy_kwh)} kWh, ${fmtNumber(est.co2_kg)} kg CO₂`],
    ["tokens_per_second", "Throughput", est.tokens_per_second,
      `${fmtNumber(est.tokens_per_second)} tokens/s, MFU ${(100 * est.mfu).toFixed(1)}%`],
    ["memory_device_bytes", "Memory per GPU", est.memory_device_bytes,
      `${fmtGiB(est.memory_device_bytes)} of ${fmtGiB(est.gpu_memory_bytes)}`],
    ["params_trainable", "Trainable parameters", est.params_trainable,
      `${fmtCount(est.params_trainable)} of ${fmtCount(est.params_total)}`],
    ["tokens", "Tokens", est.tokens, `${fmtCount(est.tokens)} × ${fmtNumber(est.epochs)} epoch(s)`],
    ["flops_total", "Compute", est.flops_total, `${est.flops_total.toPrecision(3)} FLOPs`],
  ];
  if (est.cost_usd_per_million_tokens !== undefined) {
    items.push(["cost_usd_per_million_tokens", "Per million tokens", est.cost_usd_per_million_tokens,
      fmtUsd(est.cost_usd_per_million_tokens)]);
    items.push(["latency_seconds", "Latency", est.latency_seconds,
      `${fmtNumber(est.latency_seconds)} s (first token ${fmtNumber(est.time_to_first_token_seconds)} s)`]);
  }
  if (est.total_cost_usd !== undefined) {
    items.push(["total_cost_usd", "With serving", est.total_cost_usd, fmtUsd(est.total_cost_usd)]);
  }
  const list = $("summary");
  list.replaceChildren(...items.map(([key, name, value, text]) => h("div", {class: "item", "data-key": key},
    h("dt", {}, name), h("dd", {"data-value": value === null ? "" : String(value)}, text))));
  const l = est.layout;
  $("layout").textContent = `Layout: ${l.gpus} GPU(s) = TP ${l.tp} × PP ${l.pp} × DP ${l.dp}, ZeRO ${l.zero}, ` +
    `micro-batch ${l.micro_batch} × ${l.grad_accum} accumulation steps` +
    (l.global_batch ? ` (global batch ${l.global_batch})` : "") + `, checkpointing ${l.grad_ckpt ? "on" : "off"}` +
    (est.offer ? `; price ${fmtUsd(est.usd_per_gpu_hour)}/GPU-hour from ${est.offer.provider} (${est.offer.as_of})`
      : "; no price listed");
}

function renderMemory(est) {
  const W = 720, H = 156, left = 12, right = 12, y = 50, barH = 46;
  const terms = Object.entries(est.memory_breakdown).filter(([, v]) => v > 0);
  const termSum = terms.reduce((a, [, v]) => a + v, 0);
  const overhead = Math.max(0, est.memory_device_bytes - termSum);
  const card = est.gpu_memory_bytes;
  const top = Math.max(card, est.memory_device_bytes) * 1.08;
  const x = (bytes) => left + (W - left - right) * bytes / top;
  const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "memory per GPU by term",
    "data-card-bytes": String(card), "data-device-bytes": String(est.memory_device_bytes)});
  // axis: GiB ticks at a round step
  const topGiB = top / GIB;
  const step = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000].find((t) => topGiB / t <= 8) || 2000;
  for (let g = 0; g * GIB <= top; g += step) {
    svg.append(s("line", {x1: x(g * GIB), x2: x(g * GIB), y1: y - 4, y2: y + barH + 4, class: "grid"}));
    svg.append(s("text", {x: x(g * GIB), y: y + barH + 20, class: "tick", "text-anchor": "middle"}, `${g}`));
  }
  svg.append(s("text", {x: W - right, y: y + barH + 38, class: "tick", "text-anchor": "end"}, "GiB per GPU"));
  let at = 0;
  const segments = [...terms, ...(overhead > 0 ? [["overhead", overhead]] : [])];
  for (const [term, bytes] of segments) {
    const rect = s("rect", {x: x(at), y, width: Math.max(0, x(at + bytes) - x(at)), height: barH,
      fill: TERM_COLOURS[term] || "#999", class: "term", "data-term": term, "data-bytes": String(bytes)});
    rect.append(s("title", {}, `${term === "overhead" ? "allocator slack and CUDA context" : label(term)}: ` +
      fmtGiB(bytes)));
    svg.append(rect);
    at += bytes;
  }
  const cardX = x(card);
  svg.append(s("line", {x1: cardX, x2: cardX, y1: y - 8, y2: y + barH + 6, class: "card-line",
    "data-bytes": String(card)}));
  const gpu = GPUS[est.gpu];
  svg.append(s("text", {x: cardX, y: y - 12, class: "card-label", "text-anchor": cardX > W * 0.6 ? "end" : "start"},
    `${gpu ? gpu.name : est.gpu}: ${fmtGiB(card)}`));
  svg.append(s("text", {x: left, y: 16, class: est.memory_device_bytes > card ? "verdict no" : "verdict"},
    `${fmtGiB(est.memory_device_bytes)} per GPU on ${est.gpus} GPU(s)` +
    (est.memory_device_bytes > card ? ": more than the card holds" : "")));
  $("memory-chart").replaceChildren(svg);
  $("memory-legend").replaceChildren(...segments.map(([term, bytes]) => {
    const swatch = h("span", {class: "swatch"});
    swatch.style.background = TERM_COLOURS[term] || "#999";
    return h("li", {"data-term": term, "data-bytes": String(bytes)}, swatch,
      `${term === "overhead" ? "allocator slack + CUDA context" : label(term)} ${fmtGiB(bytes)}`);
  }));
}

function table(node, head, rows) {
  const thead = h("thead", {}, h("tr", {}, ...head.map((c) => h("th", {}, c))));
  const tbody = h("tbody");
  for (const row of rows) {
    const tr = h("tr", row.attrs || {});
    for (const [text, value] of row.cells) {
      tr.append(h("td", value === undefined ? {} : {"data-value": value === null ? "" : String(value)}, text));
    }
    tbody.append(tr);
  }
  node.replaceChildren(thead, tbody);
}

function renderCompare(data, method) {
  table($("compare-table"), ["approach", "trainable", "tokens", "memory/GPU", "GPUs", "wall time", "GPU-hours",
    "cost", "× cheapest", "kWh"], data.rows.map((r) => ({
    attrs: {"data-method": r.method, class: (r.method === method ? "current " : "") + (r.fits ? "" : "nofit")},
    cells: [
      [r.method], [fmtCount(r.params_trainable), r.params_trainable], [fmtCount(r.tokens), r.tokens],
      [fmtGiB(r.memory_device_bytes) + (r.fits ? "" : " (no fit)"), r.memory_device_bytes],
      [String(r.gpus), r.gpus], [fmtHours(r.wall_hours), r.wall_hours], [fmtNumber(r.gpu_hours), r.gpu_hours],
      [fmtUsd(r.cost_usd), r.cost_usd], [r.relative_cost ? `${fmtNumber(r.relative_cost)}×` : "–", r.relative_cost],
      [fmtNumber(r.energy_kwh), r.energy_kwh],
    ],
  })));
  $("compare-notes").replaceChildren(...data.notes.map((n) => h("li", {}, n)));
}

function logTicks(lo, hi) {
  const ticks = [];
  for (let d = Math.floor(Math.log10(lo)); d <= Math.ceil(Math.log10(hi)); d++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** d;
      if (v >= lo && v <= hi) ticks.push(v);
    }
  }
  return ticks;
}

function renderPlan(plan) {
  const rows = plan.rows;
  $("plan-summary").textContent = `${plan.evaluated.toLocaleString("en-US")} configurations evaluated, ` +
    `${plan.fitting.toLocaleString("en-US")} fit in memory, ${plan.feasible_count.toLocaleString("en-US")} meet ` +
    `the deadline and budget; ${rows.length} on the Pareto front.` + (plan.feasible ? "" : ` ${plan.why}`);
  $("plan-section").dataset.feasible = String(plan.feasible);
  const W = 720, H = 340, ml = 74, mr = 20, mt = 16, mb = 48;
  const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "plan: dollars against hours",
    "data-points": String(rows.length)});
  if (rows.length) {
    const hours = rows.map((r) => r.wall_seconds / 3600), usd = rows.map((r) => Math.max(r.cost_usd, 1e-6));
    const span = (values) => {
      let lo = Math.min(...values) / 1.25, hi = Math.max(...values) * 1.25;
      if (hi / lo < 10) { const mid = Math.sqrt(lo * hi); lo = mid / Math.sqrt(10); hi = mid * Math.sqrt(10); }
      return [lo, hi];
    };
    const [hx0, hx1] = span(hours), [uy0, uy1] = span(usd);
    const X = (v) => ml + (W - ml - mr) * (Math.log10(v) - Math.log10(hx0)) / (Math.log10(hx1) - Math.log10(hx0));
    const Y = (v) => H - mb - (H - mt - mb) * (Math.log10(v) - Math.log10(uy0)) / (Math.log10(uy1) - Math.log10(uy0));
    for (const t of logTicks(hx0, hx1)) {
      svg.append(s("line", {x1: X(t), x2: X(t), y1: mt, y2: H - mb, class: "grid"}));
      svg.append(s("text", {x: X(t), y: H - mb + 16, class: "tick", "text-anchor": "middle"}, fmtHours(t)));
    }
    for (const t of logTicks(uy0, uy1)) {
      svg.append(s("line", {x1: ml, x2: W - mr, y1: Y(t), y2: Y(t), class: "grid"}));
      svg.append(s("text", {x: ml - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end"}, fmtUsd(t)));
    }
    svg.append(s("text", {x: (ml + W - mr) / 2, y: H - 8, class: "axis", "text-anchor": "middle"},
      "wall time (log)"));
    svg.append(s("text", {x: 14, y: (mt + H - mb) / 2, class: "axis", "text-anchor": "middle",
      transform: `rotate(-90 14 ${(mt + H - mb) / 2})`}, "cost (log)"));
    const order = hours.map((_, i) => i).sort((a, b) => hours[a] - hours[b]);
    svg.append(s("polyline", {points: order.map((i) => `${X(hours[i])},${Y(usd[i])}`).join(" "), class: "front"}));
    rows.forEach((r, i) => {
      const dot = s("circle", {cx: X(hours[i]), cy: Y(usd[i]), r: 5, class: `point method-${r.method}`,
        "data-hours": String(hours[i]), "data-usd": String(r.cost_usd), "data-index": String(i)});
      dot.append(s("title", {}, `${r.method}, ${r.gpus} × ${r.gpu}, ${r.precision}: ${fmtHours(hours[i])}, ` +
        fmtUsd(r.cost_usd)));
      svg.append(dot);
    });
  } else {
    svg.append(s("text", {x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle"}, "nothing feasible"));
  }
  $("plan-chart").replaceChildren(svg);
  table($("plan-table"), ["method", "GPUs", "precision", "micro-batch", "ckpt", "ZeRO", "TP × PP", "wall time",
    "cost", "offer"], rows.map((r, i) => ({attrs: {"data-index": String(i)}, cells: [
    [r.method], [`${r.gpus} × ${r.gpu}`, r.gpus], [r.precision], [String(r.micro_batch), r.micro_batch],
    [r.grad_ckpt ? "on" : "off"], [String(r.zero), r.zero], [`${r.tp} × ${r.pp}`],
    [fmtHours(r.wall_seconds / 3600), r.wall_seconds / 3600], [fmtUsd(r.cost_usd), r.cost_usd],
    [`${r.provider}, ${fmtUsd(r.usd_per_gpu_hour)}/GPU-h`],
  ]})));
}

function renderAssumptions(est, compare) {
  const items = est.assumptions.map((a) => h("li", {}, a));
  items.push(...est.layout.why.map((w) => h("li", {class: "why"}, `layout: ${w}`)));
  if (compare) {
    const more = h("details", {}, h("summary", {}, "Each approach's assumptions"));
    for (const [method, list] of Object.entries(compare.assumptions)) {
      more.append(h("h3", {}, method), h("ul", {}, ...list.map((a) => h("li", {}, a))));
    }
    items.push(h("li", {class: "more"}, more));
  }
  $("assumptions").replaceChildren(...items);
}

// --- one update: estimate, then the comparison and the plan side by side --------------------------

async function update() {
  const mine = ++generation;
  const state = readState();
  syncUrl(state);
  document.body.dataset.busy = "true";
  try {
    const est = await api("estimate", argsFor("estimate", state));
    if (mine !== generation) return;
    showError($("error"), null);
    $("results").classList.remove("stale");
    renderSummary(est);
    renderMemory(est);
    renderAssumptions(est, null);
    const [compare, plan] = await Promise.allSettled([api("compare", compareArgs(state)),
      api("plan", planArgs(state, est))]);
    if (mine !== generation) return;
    showError($("compare-error"), compare.status === "rejected" ? compare.reason : null);
    if (compare.status === "fulfilled") { renderCompare(compare.value, est.method); renderAssumptions(est, compare.value); }
    else $("compare-table").replaceChildren();
    showError($("plan-error"), plan.status === "rejected" ? plan.reason : null);
    if (plan.status === "fulfilled") renderPlan(plan.value);
    else { $("plan-chart").replaceChildren(); $("plan-table").replaceChildren(); $("plan-summary").textContent = ""; }
  } catch (error) {
    if (mine !== generation) return;
    showError($("error"), error);
    $("results").classList.add("stale");
  } finally {
    if (mine === generation) {
      document.body.dataset.generation = String(mine);
      document.body.dataset.busy = "false";
    }
  }
}

function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(update, delay);
}

async function downloadReport() {
  const format = $("report-format").value;
  const status = $("download-status");
  status.textContent = "writing the report (a plan search and charts; a few seconds)…";
  try {
    const response = await request("/api/report", {...reportArgs(readState()), format});
    const blob = await response.blob();
    const link = h("a", {href: URL.createObjectURL(blob), download: `costplan-report.${format}`});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    $("download").dataset.bytes = String(blob.size);
    status.textContent = `costplan-report.${format}: ${blob.size.toLocaleString("en-US")} bytes`;
  } catch (error) {
    status.textContent = error.message;
  }
}

async function start() {
  try {
    const [options, models, gpus] = await Promise.all(["/api/options", "/api/models", "/api/gpus"].map(
      async (path) => (await request(path, {})).json()));
    OPTIONS = options;
    for (const m of models) {
      $("model").append(h("option", {value: m.key}, `${m.key} (${fmtCount(m.params)})`));
    }
    for (const g of gpus) {
      GPUS[g.key] = g;
      $("gpu").append(h("option", {value: g.key}, `${g.name} (${g.memory_gib} GiB)`));
    }
    const methodOption = OPTIONS.estimate.find((o) => o.name === "method");
    for (const m of methodOption.choices) $("method").append(h("option", {value: m}, m));
    MODEL_ALIASES = Object.fromEntries(models.flatMap((m) => [m.key, ...m.aliases.split(/,\s*/)]
      .filter(Boolean).map((a) => [a.toLowerCase(), m.key])));
    const defaults = Object.fromEntries(OPTIONS.estimate.map((o) => [o.name, o.default]));
    setChoice("model", defaults.model);
    setChoice("method", defaults.method);
    setChoice("gpu", defaults.gpu);
    buildAdvanced();
    applyUrl();
  } catch (error) {
    showError($("error"), error);
    document.body.dataset.busy = "false";
    return;
  }
  const form = $("settings");
  form.addEventListener("change", (event) => { if (event.target.id !== "config") schedule(0); });
  form.addEventListener("input", (event) => { if (event.target.tagName === "INPUT") schedule(500); });
  form.addEventListener("submit", (event) => { event.preventDefault(); schedule(0); });
  $("config").addEventListener("change", () => {
    upload = $("config").files[0] || null;
    $("config-note").hidden = !upload;
    $("config-name").textContent = upload ? upload.name : "";
    schedule(0);
  });
  $("clear-config").addEventListener("click", () => {
    upload = null;
    $("config").value = "";
    $("config-note").hidden = true;
    schedule(0);
  });
  $("copy-link").addEventListener("click", async () => {
    $("share-url").select();
    try { await navigator.clipboard.writeText($("share-url").value); } catch (e) { document.execCommand("copy"); }
  });
  $("download").addEventListener("click", downloadReport);
  update();
}

document.addEventListener("DOMContentLoaded", start);
