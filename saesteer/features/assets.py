"""The dashboard's static files: index.html, style.css and app.js (no build step, no network).

index.html loads data/meta.js (which creates `window.SAESTEER`), data/index.js, data/vocab.js and
data/prompts.js with <script> tags (fetch() of file:// is blocked), then app.js, which routes on the
URL hash: `#/` feature list, `#/feature/<i>` one latent (its data/features_<chunk>.js is loaded on
demand), `#/prompts` and `#/prompt/<k>`. A Content-Security-Policy allows only the folder's own
scripts and no connections; app.js builds every element with text nodes, so token text is never
parsed as HTML.
"""

INDEX_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:">
<title>saesteer features</title>
<link rel="stylesheet" href="style.css">
<script src="data/meta.js"></script>
<script src="data/index.js"></script>
<script src="data/vocab.js"></script>
<script src="data/prompts.js"></script>
</head>
<body>
<header><h1 id="title"></h1><nav><a href="#/">Features</a><a href="#/prompts">Prompts</a></nav><span id="about"></span></header>
<main id="main"></main>
<script src="app.js"></script>
</body>
</html>
"""

STYLE_CSS = r""":root { --fg: #1d1d1f; --muted: #6e6e73; --line: #e3e3e8; --accent: #b34700; --chip: #f2f2f5; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: 0.6em 1.2em; border-bottom: 1px solid var(--line); background: #fafafa; }
header h1 { font-size: 1.1em; margin: 0; }
header nav a { margin-right: 1em; }
#about { color: var(--muted); font-size: 0.9em; }
main { padding: 0.8em 1.2em 3em; max-width: 1200px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.controls { display: flex; flex-wrap: wrap; gap: 1em; align-items: center; margin-bottom: 0.8em; }
.controls input[type=search] { width: 16em; padding: 0.3em 0.5em; }
.controls input[type=number] { width: 5.5em; }
#count { color: var(--muted); }
table.list { border-collapse: collapse; width: 100%; }
table.list th, table.list td { text-align: left; padding: 0.25em 0.5em; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.chip { display: inline-block; background: var(--chip); border-radius: 4px; padding: 0 0.35em; margin: 1px 2px; white-space: pre; font-family: ui-monospace, monospace; font-size: 0.92em; max-width: 18em; overflow: hidden; text-overflow: ellipsis; vertical-align: bottom; }
.chip small { color: var(--muted); }
.chip em { font-family: system-ui, sans-serif; color: var(--fg); }
.muted { color: var(--muted); }
.error { color: #b00020; font-weight: 600; }
table.stats th { text-align: left; padding-right: 1em; font-weight: 500; color: var(--muted); }
.columns { display: flex; flex-wrap: wrap; gap: 2em; margin: 1em 0; }
.columns section { min-width: 10em; }
.columns h3, main h3 { font-size: 1em; margin: 0.8em 0 0.4em; }
svg.hist rect { fill: var(--accent); }
svg.hist .tick { font-size: 10px; fill: var(--muted); }
.context { display: flex; gap: 0.8em; padding: 2px 0; border-bottom: 1px dotted var(--line); }
.context .act { width: 5em; text-align: right; color: var(--muted); font-variant-numeric: tabular-nums; flex: none; }
.text { font-family: ui-monospace, monospace; font-size: 0.92em; white-space: pre-wrap; word-break: break-word; }
.tok { white-space: pre; border-radius: 2px; }
.tok.center { outline: 1px solid var(--accent); }
.strip { padding: 0.6em; border: 1px solid var(--line); border-radius: 6px; margin-bottom: 1em; }
#label { width: 24em; padding: 0.3em 0.5em; }
.nav { float: right; }
"""

APP_JS = r""""use strict";
// saesteer feature dashboard: a hash-routed single page over the data/*.js files.
// Every piece of data text reaches the page through text nodes (el(), textContent): never as HTML.
(function () {
  const S = window.SAESTEER;
  const PAGE = 100;
  const main = document.getElementById("main");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }

  // ---------------------------------------------------------------- formatting and tokens
  const num = (x) => (x === 0 ? "0" : Math.abs(x) >= 1e4 || Math.abs(x) < 1e-3 ? x.toExponential(2) : x.toPrecision(4).replace(/\.?0+$/, ""));
  const pct = (x) => (x === 0 ? "0%" : (100 * x).toPrecision(3).replace(/\.?0+$/, "") + "%");
  const tokenText = (id) => (id in S.vocab ? S.vocab[id] : "\u27e8" + id + "\u27e9");
  const shown = (id) => tokenText(id).replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
  const searchText = S.index.density.map((_, i) =>
    [...S.index.tokens[i], ...S.index.up[i]].map((id) => tokenText(id).toLowerCase()).join("\u0000"));

  function tokenChip(id, extra) {
    return el("span", { class: "chip tok" }, shown(id), extra === undefined ? null : el("small", {}, " " + num(extra)));
  }

  function featureLink(i, extra) {
    const label = labels.get(i);
    return el("a", { class: "chip feat", href: "#/feature/" + i, "data-latent": i },
      "#" + i, label ? el("em", {}, " " + label) : null, extra === undefined ? null : el("small", {}, " " + extra));
  }

  // ---------------------------------------------------------------- labels (localStorage)
  const labels = {
    key: "saesteer-labels:" + S.meta.key,
    saved: true,
    all: {},
    load() {
      try { this.all = JSON.parse(localStorage.getItem(this.key) || "{}"); }
      catch (error) { this.all = {}; this.saved = false; }
    },
    get(i) { return this.all[i] || ""; },
    set(i, text) {
      if (text) this.all[i] = text; else delete this.all[i];
      try { localStorage.setItem(this.key, JSON.stringify(this.all)); this.saved = true; }
      catch (error) { this.saved = false; }
    },
  };
  labels.load();

  // ---------------------------------------------------------------- feature detail chunks
  function loadChunk(chunk) {
    if (S.chunks[chunk]) return Promise.resolve(S.chunks[chunk]);
    return new Promise((resolve, reject) => {
      const src = "data/features_" + String(chunk).padStart(4, "0") + ".js";
      const script = el("script", { src });
      script.onload = () => (S.chunks[chunk] ? resolve(S.chunks[chunk]) : reject(new Error(src + " holds no data")));
      script.onerror = () => reject(new Error("Could not load " + src + " (was the dashboard folder copied whole?)"));
      document.head.append(script);
    });
  }

  // ---------------------------------------------------------------- feature list
  const state = { query: "", sort: "index", minPct: "", maxPct: "", hideDead: false, labelled: false, limit: PAGE };

  function matches(i) {
    const { index } = S;
    const density = index.density[i];
    if (state.hideDead && density === 0) return false;
    if (state.labelled && !labels.get(i)) return false;
    if (state.minPct !== "" && 100 * density < +state.minPct) return false;
    if (state.maxPct !== "" && 100 * density > +state.maxPct) return false;
    const query = state.query.trim().toLowerCase();
    if (!query) return true;
    if (/^#\d+$/.test(query)) return i === +query.slice(1);
    return String(i) === query || labels.get(i).toLowerCase().includes(query) || searchText[i].includes(query);
  }

  const ORDER = {
    index: () => 0,
    "density-desc": (a, b) => S.index.density[b] - S.index.density[a],
    "density-asc": (a, b) => S.index.density[a] - S.index.density[b],
    "max-desc": (a, b) => S.index.max[b] - S.index.max[a],
  };

  function listRows(body, count, more) {
    const ids = [];
    for (let i = 0; i < S.index.density.length; i++) if (matches(i)) ids.push(i);
    if (state.sort !== "index") ids.sort((a, b) => ORDER[state.sort](a, b) || a - b);
    body.replaceChildren(...ids.slice(0, state.limit).map((i) => el("tr", { "data-latent": i, "data-density": S.index.density[i] },
      el("td", {}, featureLink(i)),
      el("td", { class: "num" }, pct(S.index.density[i])),
      el("td", { class: "num" }, num(S.index.max[i])),
      el("td", {}, S.index.tokens[i].map((id) => tokenChip(id))),
      el("td", {}, S.index.up[i].map((id) => tokenChip(id))))));
    count.textContent = ids.length + " of " + S.index.density.length + " latents";
    more.hidden = ids.length <= state.limit;
  }

  function showList() {
    document.title = S.meta.title + " \u2014 features";
    const body = el("tbody", { id: "rows" });
    const count = el("span", { id: "count" });
    const more = el("button", { id: "more", onclick: () => { state.limit += PAGE; listRows(body, count, more); } }, "Show more");
    const refresh = () => { state.limit = PAGE; listRows(body, count, more); };
    const input = (key, attrs) => el("input", { ...attrs, value: state[key], oninput: (e) => { state[key] = e.target.value; refresh(); } });
    const check = (key, id) => {
      const box = el("input", { type: "checkbox", id, onchange: (e) => { state[key] = e.target.checked; refresh(); } });
      box.checked = state[key];
      return box;
    };
    const sort = el("select", { id: "sort", onchange: (e) => { state.sort = e.target.value; refresh(); } },
      ["index", "density-desc", "density-asc", "max-desc"].map((v) => el("option", { value: v }, v.replace("-desc", " \u2193").replace("-asc", " \u2191"))));
    sort.value = state.sort;
    main.append(
      el("div", { class: "controls" },
        input("query", { id: "search", type: "search", placeholder: "token, label or #id", autofocus: "" }),
        el("label", {}, "sort ", sort),
        el("label", {}, "density % ", input("minPct", { id: "min-density", type: "number", step: "any", placeholder: "min" }),
          " \u2013 ", input("maxPct", { id: "max-density", type: "number", step: "any", placeholder: "max" })),
        el("label", {}, check("hideDead", "hide-dead"), " hide dead"),
        el("label", {}, check("labelled", "labelled"), " labelled only"),
        count),
      el("table", { class: "list" },
        el("thead", {}, el("tr", {}, ["latent", "density", "max act", "top-activating tokens", "promotes (logit lens)"].map((h) => el("th", {}, h)))),
        body),
      more);
    listRows(body, count, more);
  }

  // ---------------------------------------------------------------- one feature
  function contextRow(example, max) {
    const [tokenIndex, ids, values, center] = example;
    return el("div", { class: "context", title: "token " + tokenIndex + " (context " + Math.floor(tokenIndex / S.meta.context_length) + ")" },
      el("span", { class: "act" }, num(values[center])),
      el("span", { class: "text" }, ids.map((id, j) => el("span", {
        class: j === center ? "tok center" : "tok",
        style: "background: rgba(255, 128, 0, " + Math.min(1, Math.max(0, values[j] / max)).toFixed(3) + ")",
        title: num(values[j]),
      }, shown(id)))));
  }

  function histogram(data) {
    const { hist_log10_min: low, hist_bins_per_decade: perDecade } = S.meta;
    const [first, counts] = data;
    const width = 420, height = 110, top = Math.max(1, ...counts);
    const bar = width / Math.max(counts.length, 1);
    const chart = svg("svg", { width, height: height + 18, class: "hist", role: "img" });
    counts.forEach((c, j) => {
      const h = (height * c) / top;
      const rect = svg("rect", { x: j * bar, y: height - h, width: Math.max(bar - 1, 1), height: h });
      const lo = 10 ** (low + (first + j) / perDecade), hi = 10 ** (low + (first + j + 1) / perDecade);
      rect.append(svg("title", {}));
      rect.firstChild.textContent = "[" + num(lo) + ", " + num(hi) + "): " + c;
      chart.append(rect);
    });
    for (let j = 0; j <= counts.length; j++) {
      const bin = first + j;
      if (bin % perDecade === 0) {
        const tick = svg("text", { x: j * bar, y: height + 14, class: "tick" });
        tick.textContent = "1e" + (low + bin / perDecade);
        chart.append(tick);
      }
    }
    return chart;
  }

  function showFeature(i) {
    const n = S.index.density.length;
    if (!(i >= 0 && i < n)) { main.append(el("p", { class: "error" }, "No latent " + i + " (there are " + n + ").")); return; }
    document.title = S.meta.title + " \u2014 latent " + i;
    const box = el("div", { id: "feature", "data-latent": i }, el("p", {}, "Loading\u2026"));
    main.append(box);
    loadChunk(Math.floor(i / S.meta.chunk_size)).then((chunk) => {
      const f = chunk[i % S.meta.chunk_size];
      const max = S.index.max[i] || 1;
      const labelInput = el("input", { id: "label", type: "text", placeholder: "your label for this latent", value: labels.get(i),
        onchange: (e) => { labels.set(i, e.target.value.trim()); saved.textContent = labels.saved ? "saved in this browser" : "not saved: storage is blocked"; } });
      const saved = el("small", { class: "muted" });
      const examples = (list, empty) => (list.length ? list.map((ex) => contextRow(ex, max)) : [el("p", { class: "muted" }, empty)]);
      box.replaceChildren(
        el("div", { class: "nav" }, i > 0 ? el("a", { href: "#/feature/" + (i - 1) }, "\u2190 #" + (i - 1)) : null, " ",
          i + 1 < n ? el("a", { href: "#/feature/" + (i + 1) }, "#" + (i + 1) + " \u2192") : null),
        el("h2", {}, "Latent #" + i),
        el("p", {}, labelInput, " ", saved),
        el("table", { class: "stats" }, el("tbody", {},
          el("tr", {}, el("th", {}, "density"), el("td", { id: "density", "data-value": S.index.density[i] }, pct(S.index.density[i]) + " (" + f.count + " of " + S.meta.n_tokens + " tokens)")),
          el("tr", {}, el("th", {}, "max activation"), el("td", { id: "max", "data-value": S.index.max[i] }, num(S.index.max[i]))),
          el("tr", {}, el("th", {}, "mean when active"), el("td", { id: "mean", "data-value": S.index.mean[i] }, num(S.index.mean[i]))))),
        el("div", { class: "columns" },
          el("section", {}, el("h3", {}, "Activation histogram"), f.hist[1].length ? histogram(f.hist) : el("p", { class: "muted" }, "never fires")),
          el("section", { id: "promoted" }, el("h3", {}, "Promotes"), f.up.map(([id, v]) => el("div", {}, tokenChip(id, v)))),
          el("section", { id: "suppressed" }, el("h3", {}, "Suppresses"), f.down.map(([id, v]) => el("div", {}, tokenChip(id, v)))),
          el("section", { id: "cofiring" }, el("h3", {}, "Co-fires with"),
            f.co.length ? f.co.map(([j, frac]) => el("div", {}, featureLink(j, pct(frac)))) : el("p", { class: "muted" }, "none"))),
        el("h3", {}, "Top activations"), el("div", { id: "top" }, examples(f.top, "never fires")),
        el("h3", {}, "Across the activation range (sampled at quantiles)"), el("div", { id: "quantiles" }, examples(f.quantiles, "no samples")));
    }).catch((error) => box.replaceChildren(el("p", { class: "error" }, error.message)));
  }

  // ---------------------------------------------------------------- prompts
  function showPromptList() {
    document.title = S.meta.title + " \u2014 prompts";
    main.append(el("h2", {}, "Prompts"), S.prompts.length
      ? el("ol", { id: "prompts", start: 0 }, S.prompts.map((p, k) => el("li", {}, el("a", { href: "#/prompt/" + k }, p.text))))
      : el("p", { class: "muted" }, "No prompts: rerun `saesteer features` with --prompts \"\u2026\"."));
  }

  function showPrompt(k) {
    const p = S.prompts[k];
    if (!p) { main.append(el("p", { class: "error" }, "No prompt " + k + ".")); return; }
    document.title = S.meta.title + " \u2014 prompt " + k;
    const firing = [...new Set(p.latents.flat().map(([j]) => j))].sort((a, b) => a - b);
    const strip = el("div", { class: "text strip", id: "strip" });
    const paint = (latent) => {
      strip.replaceChildren(...p.tokens.map((id, t) => {
        const hit = p.latents[t].find(([j]) => j === latent);
        const value = latent === "" ? Math.max(0, ...p.latents[t].map(([, v]) => v)) : hit ? hit[1] : 0;
        const scale = latent === "" ? Math.max(1e-9, ...p.latents.flat().map(([, v]) => v)) : S.index.max[latent] || 1;
        return el("span", { class: "tok", title: num(value), style: "background: rgba(255, 128, 0, " + Math.min(1, value / scale).toFixed(3) + ")" }, shown(id));
      }));
    };
    const pick = el("select", { id: "highlight", onchange: (e) => paint(e.target.value === "" ? "" : +e.target.value) },
      el("option", { value: "" }, "strongest latent per token"), firing.map((j) => el("option", { value: j }, "#" + j + (labels.get(j) ? " " + labels.get(j) : ""))));
    paint("");
    main.append(
      el("h2", {}, "Prompt " + k), el("p", {}, el("label", {}, "highlight ", pick)), strip,
      el("table", { class: "list", id: "prompt-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "position"), el("th", {}, "token"), el("th", {}, "latents firing (strongest first)"))),
        el("tbody", {}, p.tokens.map((id, t) => el("tr", { "data-position": t },
          el("td", { class: "num" }, t), el("td", {}, tokenChip(id)),
          el("td", {}, p.latents[t].map(([j, v]) => featureLink(j, num(v)))))))));
  }

  // ---------------------------------------------------------------- routing
  function route() {
    const [page, arg] = location.hash.replace(/^#\/?/, "").split("/");
    main.replaceChildren();
    window.scrollTo(0, 0);
    if (page === "feature") showFeature(Number(arg));
    else if (page === "prompt") showPrompt(Number(arg));
    else if (page === "prompts") showPromptList();
    else showList();
  }

  document.getElementById("title").textContent = S.meta.title;
  document.getElementById("about").textContent = S.meta.about;
  window.addEventListener("hashchange", route);
  route();
})();
"""
