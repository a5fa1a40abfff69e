// The Apiary dashboard: plain JavaScript, no build step, nothing fetched but this node's
// own API. Every string from the node, its plugins and its peers reaches the page as
// text (textContent, attributes), never as markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // The SVG namespace, taken from an SVG element the HTML parser made.
  const SVG_NS = $("peer-graph").namespaceURI;
  const PHASES = ["forming", "answering", "judging", "done"];
  const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d", "#9333ea", "#ea580c"];
  const MAX_LIVE_ROUNDS = 12;
  const MAX_SAMPLES = 120;

  const state = {
    node: null,
    nodeAt: 0, // when the last node object arrived (for the ticking uptime)
    ready: false,
    rounds: new Map(), // id → the round, merged from its events
    roundEls: new Map(), // id → its <article>
    history: [], // GET /v1/rounds, newest first
    samples: [], // {t, rss, cpu}
    peersSeen: new Set(),
  };

  // ---- small DOM helpers -------------------------------------------------------------

  function build(make, tag, attrs, children) {
    const node = make(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const h = (tag, attrs, ...children) => build((t) => document.createElement(t), tag, attrs, children);
  const s = (tag, attrs, ...children) => build((t) => document.createElementNS(SVG_NS, t), tag, attrs, children);
  const append = (node, ...children) => { node.append(...children.filter((c) => c !== null && c !== undefined && c !== false)); return node; };
  const clear = (node) => { while (node.firstChild) node.firstChild.remove(); return node; };
  const show = (node, visible) => { node.hidden = !visible; };
  const text = (id, value) => { $(id).textContent = value; };

  // ---- formatting --------------------------------------------------------------------

  const num = (v) => typeof v === "number" && Number.isFinite(v);
  const fixed = (v, d) => (num(v) ? v.toFixed(d) : "—");
  const pad = (n) => String(n).padStart(2, "0");
  // Milliseconds since the epoch (a value that can only be seconds is read as seconds).
  const epochMs = (t) => (num(t) && t > 0 && t < 1e11 ? t * 1000 : t);
  function clock(ms) {
    if (!num(ms)) return "—";
    const d = new Date(epochMs(ms));
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function when(ms) {
    if (!num(ms)) return "—";
    const d = new Date(epochMs(ms));
    const today = new Date();
    const day = d.toDateString() === today.toDateString() ? "" : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `;
    return day + clock(ms);
  }
  function duration(secs) {
    if (!num(secs)) return "—";
    secs = Math.max(0, Math.floor(secs));
    const d = Math.floor(secs / 86400), hh = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60), sec = secs % 60;
    if (d) return `${d}d ${hh}h ${m}m`;
    if (hh) return `${hh}h ${m}m ${sec}s`;
    if (m) return `${m}m ${sec}s`;
    return `${sec}s`;
  }
  const short = (id, n = 10) => {
    const v = String(id ?? "");
    return v.length > n + 1 ? `${v.slice(0, n)}…` : v;
  };
  const tail = (id, n = 6) => {
    const v = String(id ?? "");
    return v.length > n + 1 ? `…${v.slice(-n)}` : v;
  };
  const clip = (v, n) => {
    const t = String(v ?? "");
    return t.length > n ? `${t.slice(0, n - 1)}…` : t;
  };
  // A member key is "<node>/<plugin>": the node shortened, the plugin in full.
  function memberLabel(key) {
    const k = String(key ?? "");
    const slash = k.indexOf("/");
    return slash < 0 ? short(k, 12) : `${short(k.slice(0, slash), 8)}/${k.slice(slash + 1)}`;
  }
  const colour = (i) => PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length];
  function hashColour(key) {
    let x = 0;
    for (const ch of String(key)) x = (x * 31 + ch.codePointAt(0)) >>> 0;
    return colour(x);
  }

  // ---- connection, auth --------------------------------------------------------------

  function setConn(kind, label) {
    const c = $("conn");
    c.dataset.conn = kind;
    c.textContent = label || kind;
  }

  function showAuth() {
    show($("auth"), true);
    show($("main"), false);
    setConn("locked", "API key needed");
    $("key-input").focus();
  }

  async function getJson(path) {
    const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (resp.status === 401) {
      showAuth();
      return null;
    }
    if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
    return resp.json();
  }

  async function start() {
    let node;
    try {
      node = await getJson("/v1/node");
    } catch (e) {
      setConn("offline", "node unreachable");
      setTimeout(start, 5000);
      return;
    }
    if (!node) return;
    renderNode(node);
    loadHistory();
    connect();
  }

  function connect() {
    const events = new EventSource("/v1/events");
    const on = (name, fn) =>
      events.addEventListener(name, (e) => {
        let data;
        try {
          data = JSON.parse(e.data);
        } catch (err) {
          console.warn(`unreadable ${name} event`, err);
          return;
        }
        if (data && typeof data === "object") fn(data);
      });
    on("node", (d) => {
      renderNode(d);
      if (!state.ready) {
        state.ready = true;
        document.body.dataset.ready = "1";
      }
    });
    on("governor", renderGovernor);
    on("round", onRound);
    // This page fell behind and missed events: the history has what finished meanwhile.
    on("lagged", () => loadHistory());
    events.onopen = () => setConn("live", "live");
    events.onerror = () => {
      if (events.readyState === EventSource.CLOSED) {
        // Refused (a changed key, say) or gone: start over, which asks for the key if needed.
        setConn("offline", "disconnected");
        setTimeout(start, 5000);
      } else {
        setConn("retry", "reconnecting");
      }
    };
  }

  // ---- the node ----------------------------------------------------------------------

  function renderNode(n) {
    state.node = n;
    state.nodeAt = Date.now();
    text("node-short", n.node ? short(n.node, 12) : "");
    text("node-id", n.node ?? "—");
    text("peer-id", n.peer_id ?? "—");
    text("node-version", n.version ?? "—");
    renderUptime();
    const r = n.rounds || {};
    const counts = [
      num(r.started) ? `${r.started} started` : null,
      num(r.running) ? `${r.running} running` : null,
      num(r.queued) ? `${r.queued} queued` : null,
      num(r.max_rounds) ? `at most ${r.max_rounds} at once` : null,
    ].filter(Boolean);
    text("node-rounds", counts.length ? counts.join(", ") : "—");
    const addrs = clear($("node-addresses"));
    for (const a of n.listening || []) addrs.append(h("li", {}, a));
    if (!addrs.firstChild) addrs.append(h("li", { class: "muted" }, "—"));
    renderGovernor(n.governor || { state: "none", reason: "this node runs without a governor" });
    renderPeers(Array.isArray(n.peers) ? n.peers : []);
    renderPlugins(n);
    renderMessages(n.messages || {});
    if (n.resources) {
      state.samples.push({ t: Date.now(), rss: n.resources.rss_mib, cpu: n.resources.cpu_percent });
      if (state.samples.length > MAX_SAMPLES) state.samples.shift();
    }
    renderResources();
  }

  function renderUptime() {
    const n = state.node;
    if (!n || !num(n.uptime_s)) return;
    text("node-uptime", duration(n.uptime_s + (Date.now() - state.nodeAt) / 1000));
  }

  function renderGovernor(g) {
    if (state.node) state.node.governor = g;
    const st = String(g.state || "none");
    const known = ["active", "throttled", "paused"].includes(st) ? st : "unknown";
    for (const b of [$("governor-state"), $("governor-badge")]) {
      b.textContent = st;
      b.className = `badge${b.id === "governor-badge" ? " big" : ""} state-${known}`;
    }
    $("governor-state").title = g.reason ? `governor: ${g.reason}` : "governor";
    text("governor-reason", g.reason || "");
    const facts = clear($("governor-facts"));
    const sample = g.sample || {};
    const rows = [
      ["Mode", g.mode ? `${g.mode}${g.manual ? " (set by the operator)" : ""}` : null],
      ["Since", num(g.since_ms) && g.since_ms > 0 ? when(g.since_ms) : null],
      ["Paused until", num(g.paused_until_ms) ? when(g.paused_until_ms) : null],
      ["Other CPU", num(sample.other_cpu_percent) ? `${fixed(sample.other_cpu_percent, 1)} %` : null],
      ["Own CPU", num(sample.own_cpu_percent) ? `${fixed(sample.own_cpu_percent, 1)} %` : null],
      ["Free memory", num(sample.available_memory_mib) ? `${Math.round(sample.available_memory_mib)} MiB` : null],
      ["On battery", typeof sample.on_battery === "boolean" ? (sample.on_battery ? "yes" : "no") : null],
      ["User idle", num(sample.user_idle_s) ? duration(sample.user_idle_s) : null],
    ];
    for (const [k, v] of rows) if (v !== null) facts.append(h("dt", {}, k), h("dd", {}, v));
  }

  // This node in the centre, its peers on a circle around it; a new peer fades in.
  function renderPeers(peers) {
    text("peer-count", String(peers.length));
    const svg = clear($("peer-graph"));
    const cx = 210, cy = 130, ring = peers.length > 8 ? 105 : 92;
    const step = (2 * Math.PI) / Math.max(peers.length, 1);
    const spots = peers.map((p, i) => {
      const a = -Math.PI / 2 + i * step;
      return { p, x: cx + ring * Math.cos(a) * 1.45, y: cy + ring * Math.sin(a) };
    });
    for (const { x, y } of spots) svg.append(s("line", { x1: cx, y1: cy, x2: x, y2: y, class: "link" }));
    for (const { p, x, y } of spots) {
      const fresh = !state.peersSeen.has(p);
      state.peersSeen.add(p);
      svg.append(
        s("g", { class: fresh && state.ready ? "peer new" : "peer", "data-peer": p },
          s("title", {}, p),
          s("circle", { cx: x, cy: y, r: 9 }),
          peers.length <= 16 ? s("text", { x, y: y + 22, "text-anchor": "middle" }, tail(p)) : null),
      );
    }
    const self = state.node || {};
    svg.append(
      s("g", { class: "self" },
        s("title", {}, `this node ${self.peer_id || ""}`),
        s("circle", { cx, cy, r: 16 }),
        s("text", { x: cx, y: cy + 32, "text-anchor": "middle", class: "self-label" }, "this node")),
    );
    if (!peers.length) {
      svg.append(s("text", { x: cx, y: cy + 60, "text-anchor": "middle", class: "note" }, "no peers connected"));
    }
  }

  function renderPlugins(n) {
    let listing = Array.isArray(n.plugin_listing) ? n.plugin_listing : null;
    if (!listing) listing = (n.plugins || []).map((name) => ({ id: name, name, status: "loaded" }));
    const loaded = listing.filter((p) => p.status === "loaded").length;
    text("plugin-count", loaded === listing.length ? String(loaded) : `${loaded} of ${listing.length} loaded`);
    const rows = clear($("plugin-rows"));
    for (const p of listing) {
      const st = String(p.status || "unknown");
      rows.append(
        h("tr", { "data-plugin": p.id ?? p.name },
          h("td", {}, h("strong", {}, p.name || p.id || "?"), p.name && p.id && p.id !== p.name ? h("div", { class: "muted small mono" }, p.id) : null),
          h("td", {}, h("span", { class: `badge small plugin-${st}` }, st)),
          h("td", { class: "reason" }, p.reason || "")),
      );
    }
    show($("plugins-empty"), listing.length === 0);
  }

  // Counters (one level of nesting flattened: "held budgets"), and the refusals by reason
  // (`refused`, or `rejected` as the node has called it).
  function renderMessages(m) {
    const counters = clear($("message-counters"));
    const reasons = ["refused", "rejected"].find((k) => m[k] && typeof m[k] === "object");
    for (const [k, v] of Object.entries(m)) {
      if (k === reasons) continue;
      const inner = v && typeof v === "object" ? Object.entries(v).map(([k2, v2]) => [`${k} ${k2}`, v2]) : [[k, v]];
      for (const [name, value] of inner) {
        if (num(value)) counters.append(h("dt", {}, name.replaceAll("_", " ")), h("dd", { class: "num" }, String(value)));
      }
    }
    const refused = Object.entries(reasons ? m[reasons] : {})
      .filter(([, v]) => num(v) && v > 0)
      .sort((a, b) => b[1] - a[1]);
    const svg = clear($("refused-chart"));
    const row = 22, max = Math.max(1, ...refused.map(([, v]) => v));
    svg.setAttribute("viewBox", `0 0 400 ${Math.max(row * refused.length, 1)}`);
    svg.setAttribute("height", String(row * refused.length));
    refused.forEach(([reason, v], i) => {
      const y = i * row;
      svg.append(
        s("g", { class: "bar", "data-reason": reason },
          s("title", {}, `${reason}: ${v}`),
          s("text", { x: 0, y: y + 15, class: "bar-label" }, clip(reason, 22)),
          s("rect", { x: 150, y: y + 4, width: Math.max(2, (200 * v) / max), height: 14, rx: 3 }),
          s("text", { x: 155 + (200 * v) / max, y: y + 15, class: "bar-value" }, String(v))),
      );
    });
    show(svg, refused.length > 0);
    show($("refused-empty"), refused.length === 0);
  }

  function renderResources() {
    const last = state.samples[state.samples.length - 1] || {};
    text("rss-now", num(last.rss) ? `${fixed(last.rss, 1)} MiB` : "—");
    text("cpu-now", num(last.cpu) ? `${fixed(last.cpu, 1)} %` : "—");
    spark($("rss-chart"), state.samples.map((x) => x.rss), 0, null, "rss");
    spark($("cpu-chart"), state.samples.map((x) => x.cpu), 0, 100, "cpu");
  }

  // A filled sparkline of `values` in a 300×48 box.
  function spark(svg, values, lo, hi, kind) {
    clear(svg);
    const v = values.filter(num);
    if (v.length === 0) return;
    const top = hi ?? Math.max(...v) * 1.15;
    const bottom = lo ?? Math.min(...v);
    const span = top - bottom || 1;
    const x = (i) => (v.length === 1 ? 300 : (300 * i) / (v.length - 1));
    const y = (val) => 46 - (44 * (Math.min(top, Math.max(bottom, val)) - bottom)) / span;
    const pts = v.map((val, i) => `${x(i).toFixed(1)},${y(val).toFixed(1)}`);
    if (v.length === 1) pts.unshift(`0,${y(v[0]).toFixed(1)}`);
    svg.append(
      s("polygon", { points: `0,48 ${pts.join(" ")} 300,48`, class: `area ${kind}` }),
      s("polyline", { points: pts.join(" "), class: `line ${kind}` }),
    );
  }

  // ---- rounds ------------------------------------------------------------------------

  const phaseRank = (p) => (p === "failed" ? 3 : PHASES.indexOf(p));

  // Events for a round arrive phase by phase, each adding keys; the done event's
  // `members` are standings (before, after, rewarded), kept beside the seated members.
  function onRound(d) {
    if (d.id === undefined || d.id === null) return;
    const id = String(d.id);
    const r = state.rounds.get(id) || { id, phase: "forming" };
    const earlier = phaseRank(d.phase) >= 0 && phaseRank(d.phase) < phaseRank(r.phase);
    for (const [k, v] of Object.entries(d)) {
      if (k === "phase" && earlier) continue;
      if (k === "members" && Array.isArray(v) && v.some((m) => m && "after" in m)) {
        r.standings = v;
        if (!r.members) r.members = v.map((m, index) => ({ index, key: m.key }));
      } else {
        r[k] = v;
      }
    }
    state.rounds.set(id, r);
    renderRound(r);
    if (r.phase === "done" && !r.recorded) {
      r.recorded = true;
      setTimeout(loadHistory, 300);
    }
  }

  function roundElement(r) {
    let art = state.roundEls.get(r.id);
    if (!art) {
      art = h("article", { class: "round", "data-round": r.id });
      $("rounds").prepend(art);
      state.roundEls.set(r.id, art);
      // Keep the newest few on the page.
      const ids = [...state.roundEls.keys()];
      while (ids.length > MAX_LIVE_ROUNDS) {
        const old = ids.shift();
        state.roundEls.get(old).remove();
        state.roundEls.delete(old);
        state.rounds.delete(old);
      }
    }
    show($("rounds-empty"), false);
    return art;
  }

  function renderRound(r) {
    const art = clear(roundElement(r));
    art.dataset.phase = r.phase;
    art.className = `round phase-${r.phase}`;

    const steps = h("ol", { class: "phases" });
    const rank = phaseRank(r.phase);
    for (const p of PHASES) {
      const label = p === "done" && r.phase === "failed" ? "failed" : p;
      const i = PHASES.indexOf(p);
      const cls = i < rank ? "past" : i === rank ? `current ${label}` : "future";
      steps.append(h("li", { class: cls }, label));
    }
    art.append(
      h("header", { class: "round-head" },
        h("div", { class: "round-title" },
          h("div", { class: "prompt" }, r.prompt ?? "(no prompt)"),
          h("div", { class: "muted small" },
            `${clock(r.at_ms)} · round `, h("span", { class: "mono" }, short(r.id, 12)),
            r.entry ? ` · entry ` : null, r.entry ? h("span", { class: "mono" }, short(r.entry, 8)) : null)),
        steps),
    );

    const body = h("div", { class: "round-body" });
    body.append(renderMembers(r), renderAnswers(r), renderVerdicts(r));
    art.append(body);

    if (r.phase === "failed") {
      art.append(h("div", { class: "round-foot failed" }, h("strong", {}, "Failed: "), r.error || "the round failed"));
    } else if (r.phase === "done") {
      const foot = h("div", { class: "round-foot" });
      append(foot,
        h("span", { class: "winner-box" }, "Answer ", h("strong", { "data-winner": "" }, r.answer ?? "(none)")),
        fact("decided by", r.decided_by ?? "—", "decided"),
        num(r.margin) ? fact("margin", fixed(r.margin, 2)) : null,
        verifiedBadge(r.verified),
      );
      art.append(foot);
    }
  }

  function fact(label, value, cls) {
    return h("span", { class: `fact ${cls || ""}` }, h("span", { class: "muted" }, `${label} `), h("strong", {}, value));
  }

  function verifiedBadge(v) {
    if (v === true) return h("span", { class: "badge small ok" }, "verified");
    if (v === false) return h("span", { class: "badge small bad" }, "not verified");
    return h("span", { class: "badge small dim" }, "unverified");
  }

  function renderMembers(r) {
    const box = h("div", { class: "col members-col" }, h("h4", {}, `Members${r.members ? ` (${r.members.length})` : ""}`));
    if (!r.members || r.members.length === 0) {
      box.append(h("p", { class: "muted small" }, r.phase === "forming" ? "waiting for volunteers…" : "—"));
      return box;
    }
    const list = h("ul", { class: "plain members" });
    r.members.forEach((m, pos) => {
      const index = num(m.index) ? m.index : pos;
      const st = (r.standings || [])[index] || (r.standings || []).find((x) => x.key === m.key);
      const answered = (r.answers || []).some((a) => a.member === index);
      const li = h("li", { "data-member": m.key ?? index, class: answered ? "answered" : "" },
        h("span", { class: "swatch", "data-judge": index }, s("svg", { viewBox: "0 0 10 10", width: 10, height: 10 }, s("circle", { cx: 5, cy: 5, r: 5, fill: colour(index) }))),
        h("span", { class: "mono", title: m.key ?? "" }, memberLabel(m.key)),
        m.plugin && !String(m.key || "").endsWith(`/${m.plugin}`) ? h("span", { class: "muted small" }, ` ${m.plugin}`) : null);
      if (st && num(st.after)) {
        const delta = num(st.before) ? st.after - st.before : 0;
        append(li,
          h("span", { class: `rep ${delta > 0 ? "up" : delta < 0 ? "down" : ""}` },
            `${fixed(st.before, 2)} → ${fixed(st.after, 2)}`),
          st.rewarded ? h("span", { class: "badge small ok", title: "rewarded" }, "rewarded") : null,
        );
      }
      list.append(li);
    });
    box.append(list);
    return box;
  }

  // Candidate of each answer: the answer's own `candidate`, else the done event's list;
  // before the round is decided, equal texts are shown together (`t:` keys).
  function candidateOf(r, a, i) {
    if (a && a.candidate !== undefined) return a.candidate;
    const c = Array.isArray(r.candidates) ? r.candidates[i] : undefined;
    return c === undefined ? `t:${a ? a.text : i}` : c;
  }
  const candLabel = (g, c) => (typeof c === "number" ? `C${c}` : `A${g.cands.indexOf(c)}`);

  function groups(r) {
    const answers = Array.isArray(r.answers) ? r.answers : [];
    const byCand = new Map();
    answers.forEach((a, i) => {
      const c = candidateOf(r, a, i);
      const key = c === null ? "struck" : c;
      if (!byCand.has(key)) byCand.set(key, []);
      byCand.get(key).push({ ...a, at: i });
    });
    let winner = null;
    if (num(r.winner) && answers[r.winner]) winner = candidateOf(r, answers[r.winner], r.winner);
    else if (r.answer !== undefined && r.answer !== null) {
      const i = answers.findIndex((a) => a.text === r.answer);
      if (i >= 0) winner = candidateOf(r, answers[i], i);
    }
    const keys = [...byCand.keys()].filter((k) => k !== "struck");
    const cands = [...keys.filter((k) => typeof k === "number").sort((a, b) => a - b), ...keys.filter((k) => typeof k !== "number")];
    return { answers, byCand, cands, winner };
  }

  // A candidate's score: `scores` is per candidate, or per answer (then the best of its answers).
  function scoreOf(r, g, c) {
    if (!Array.isArray(r.scores)) return null;
    if (r.scores.length === g.answers.length) {
      const mine = (g.byCand.get(c) || []).map((a) => r.scores[a.at]).filter(num);
      return mine.length ? Math.max(...mine) : null;
    }
    return typeof c === "number" && num(r.scores[c]) ? r.scores[c] : null;
  }

  function renderAnswers(r) {
    const box = h("div", { class: "col answers-col" }, h("h4", {}, "Answers by candidate"));
    const g = groups(r);
    if (g.answers.length === 0) {
      box.append(h("p", { class: "muted small" }, r.phase === "failed" ? "no answers" : "waiting for answers…"));
      return box;
    }
    const members = r.members || [];
    const keyOf = (i) => (members.find((m) => m.index === i) || members[i] || {}).key;
    for (const c of [...g.cands, ...(g.byCand.has("struck") ? ["struck"] : [])]) {
      const list = g.byCand.get(c);
      const score = c === "struck" ? null : scoreOf(r, g, c);
      const texts = [...new Set(list.map((a) => String(a.text ?? "")))];
      const isWinner = c === g.winner && r.phase === "done";
      box.append(
        h("div", { class: `candidate${isWinner ? " winner" : ""}${c === "struck" ? " struck" : ""}`, "data-candidate": c },
          h("div", { class: "cand-head" },
            h("span", { class: "cand-id" }, c === "struck" ? "left out" : candLabel(g, c)),
            num(score) ? h("span", { class: "muted small" }, `score ${fixed(score, 2)}`) : null,
            isWinner ? h("span", { class: "badge small ok" }, "winner") : null),
          ...texts.map((t) => h("div", { class: "answer-text" }, clip(t, 400))),
          h("div", { class: "by small" }, "from ",
            ...list.flatMap((a, i) => [i ? ", " : null, h("span", { class: "mono", title: keyOf(a.member) ?? "" }, memberLabel(keyOf(a.member) ?? `member ${a.member}`))]))),
      );
    }
    return box;
  }

  // Candidates as nodes on a circle; each verdict an arrow towards the candidate its
  // judge preferred, coloured by judge, as thick as the judge was sure. Ties, "same" and
  // abstentions are dashed lines.
  function renderVerdicts(r) {
    const box = h("div", { class: "col verdicts-col" }, h("h4", {}, "Verdicts"));
    const g = groups(r);
    const verdicts = Array.isArray(r.verdicts) ? r.verdicts : [];
    if (g.cands.length === 0 || r.phase !== "done" || !g.cands.every((c) => typeof c === "number")) {
      box.append(h("p", { class: "muted small" }, r.phase === "judging" ? "judges at work…" : "—"));
      return box;
    }
    const W = 260, H = 170, cx = W / 2, cy = H / 2 - 6, rad = g.cands.length === 1 ? 0 : 56, nodeR = 17;
    const pos = new Map();
    g.cands.forEach((c, i) => {
      const a = Math.PI + (2 * Math.PI * i) / g.cands.length;
      pos.set(c, { x: cx + rad * 1.4 * Math.cos(a), y: cy + rad * Math.sin(a) });
    });
    const svg = s("svg", { class: "verdict-graph", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "verdict graph" });
    const answers = g.answers;
    let drawn = 0;
    const pairs = new Map();
    for (const v of verdicts) {
      const ca = candidateOf(r, answers[v.first], v.first);
      const cb = candidateOf(r, answers[v.second], v.second);
      if (ca === null || cb === null || ca === cb || !pos.has(ca) || !pos.has(cb)) continue;
      const pairKey = [ca, cb].sort().join("-");
      const nth = pairs.get(pairKey) || 0;
      pairs.set(pairKey, nth + 1);
      let p = null; // probability the first is better
      const o = v.outcome;
      if (o === "first") p = 1;
      else if (o === "second") p = 0;
      else if (o === "tie") p = 0.5;
      else if (o && typeof o === "object" && num(o.prefer)) p = o.prefer / 1000;
      const judge = num(v.judge) ? v.judge : 0;
      const from = p !== null && p < 0.5 ? pos.get(ca) : pos.get(cb);
      const to = p !== null && p < 0.5 ? pos.get(cb) : pos.get(ca);
      const sure = p === null ? 0 : Math.abs(p - 0.5) * 2;
      const label = `judge ${judge} (${memberLabel(((r.members || [])[judge] || {}).key)}): ${typeof o === "object" ? `prefer ${o.prefer}‰` : o}`;
      svg.append(edge(from, to, nodeR, nth, colour(judge), p === null || sure < 0.1 ? 0 : 1 + 3 * sure, label));
      drawn++;
    }
    for (const c of g.cands) {
      const { x, y } = pos.get(c);
      const win = c === g.winner;
      const t = String(((g.byCand.get(c) || [])[0] || {}).text ?? "");
      svg.append(
        s("g", { class: `cand-node${win ? " win" : ""}` },
          s("title", {}, `C${c}: ${t}`),
          s("circle", { cx: x, cy: y, r: nodeR }),
          s("text", { x, y: y + 4, "text-anchor": "middle" }, `C${c}`),
          s("text", { x, y: y + nodeR + 13, "text-anchor": "middle", class: "cand-caption" }, clip(t, 12))),
      );
    }
    box.append(svg);
    if (drawn) box.append(h("p", { class: "muted small" }, "Arrows point to the answer a judge preferred, coloured as its judge in Members; dashed: a tie, \u201csame\u201d or no opinion."));
    if (!drawn) box.append(h("p", { class: "muted small" }, verdicts.length ? "only verdicts within one candidate" : "no verdicts were needed"));
    return box;
  }

  // An arrow from `a` to `b` (or a dashed line when width is 0), bent by `nth` so that
  // several verdicts on one pair stay apart.
  function edge(a, b, nodeR, nth, stroke, width, label) {
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const ux = dx / len, uy = dy / len;
    const bend = (nth % 2 ? 1 : -1) * Math.ceil(nth / 2) * 14;
    const mx = (a.x + b.x) / 2 - uy * bend, my = (a.y + b.y) / 2 + ux * bend;
    const sx = a.x + ux * nodeR, sy = a.y + uy * nodeR;
    const ex = b.x - ux * (nodeR + 2), ey = b.y - uy * (nodeR + 2);
    const g = s("g", { class: "verdict" }, s("title", {}, label));
    g.append(s("path", {
      d: `M${sx.toFixed(1)},${sy.toFixed(1)} Q${mx.toFixed(1)},${my.toFixed(1)} ${ex.toFixed(1)},${ey.toFixed(1)}`,
      fill: "none", stroke, "stroke-width": width || 1.5, "stroke-dasharray": width ? null : "4 3", "stroke-linecap": "round",
    }));
    if (width) {
      // The head points along the curve's last tangent (control point → end).
      const tx = ex - mx, ty = ey - my, tl = Math.hypot(tx, ty) || 1;
      const hx = tx / tl, hy = ty / tl, size = 6 + width;
      const p1 = `${(ex - hx * size - hy * size * 0.6).toFixed(1)},${(ey - hy * size + hx * size * 0.6).toFixed(1)}`;
      const p2 = `${(ex - hx * size + hy * size * 0.6).toFixed(1)},${(ey - hy * size - hx * size * 0.6).toFixed(1)}`;
      g.append(s("polygon", { points: `${ex.toFixed(1)},${ey.toFixed(1)} ${p1} ${p2}`, fill: stroke }));
    }
    return g;
  }

  // ---- history, reputation ----------------------------------------------------------

  let historyBusy = false;
  async function loadHistory() {
    if (historyBusy) return;
    historyBusy = true;
    try {
      const list = await getJson("/v1/rounds?limit=50");
      if (list && Array.isArray(list.data)) {
        state.history = list.data;
        renderHistory();
      }
    } catch (e) {
      console.warn("round history unavailable", e);
    } finally {
      historyBusy = false;
    }
  }

  function renderHistory() {
    const rows = clear($("history-rows"));
    for (const r of state.history) {
      const members = Array.isArray(r.members) ? r.members : [];
      const rewarded = members.filter((m) => m.rewarded).length;
      rows.append(
        h("tr", { "data-history": r.id },
          h("td", { class: "nowrap" }, when(r.at_ms)),
          h("td", { class: "prompt-cell", title: r.prompt ?? "" }, clip(r.prompt, 80)),
          h("td", {}, r.answer === null || r.answer === undefined ? h("span", { class: "muted" }, "no answer") : h("strong", {}, clip(r.answer, 60))),
          h("td", {}, r.decided_by ?? "—"),
          h("td", { class: "num" }, fixed(r.margin, 2)),
          h("td", { class: "num" }, members.length ? `${members.length} (${rewarded} rewarded)` : "—"),
          h("td", {}, verifiedBadge(r.verified))),
      );
    }
    text("history-count", String(state.history.length));
    show($("history-empty"), state.history.length === 0);
    renderReputation();
  }

  // Each member key's reputation after each round, from the history and the live done
  // events not yet in it, oldest first.
  function renderReputation() {
    const seen = new Map();
    for (const r of state.history) seen.set(String(r.id), r);
    for (const r of state.rounds.values()) {
      if (r.phase === "done" && r.standings && !seen.has(r.id)) seen.set(r.id, { at_ms: r.at_ms, members: r.standings });
    }
    const rounds = [...seen.values()].sort((a, b) => (epochMs(a.at_ms) || 0) - (epochMs(b.at_ms) || 0));
    // The plugin behind a key, where a live round named it.
    const plugins = new Map();
    for (const r of state.rounds.values()) for (const m of r.members || []) if (m.plugin) plugins.set(m.key, m.plugin);
    const series = new Map();
    rounds.forEach((r, i) => {
      for (const m of Array.isArray(r.members) ? r.members : []) {
        if (!m || m.key === undefined || !num(m.after)) continue;
        if (!series.has(m.key)) series.set(m.key, []);
        series.get(m.key).push({ i, after: m.after, before: m.before, rewarded: !!m.rewarded });
      }
    });
    const rows = clear($("reputation-rows"));
    const total = Math.max(rounds.length, 2);
    const all = [...series.values()].flat().flatMap((p) => [p.after, p.before]).filter(num);
    let lo = Math.max(0, Math.min(...all, 0.5) - 0.05), hi = Math.min(1, Math.max(...all, 0.5) + 0.05);
    if (hi - lo < 0.2) [lo, hi] = [Math.max(0, (lo + hi) / 2 - 0.1), Math.min(1, (lo + hi) / 2 + 0.1)];
    const keys = [...series.keys()].sort();
    for (const key of keys) {
      const pts = series.get(key);
      const last = pts[pts.length - 1];
      const won = pts.filter((p) => p.rewarded).length;
      rows.append(
        h("tr", { "data-reputation": key },
          h("td", { title: key }, h("span", { class: "mono" }, memberLabel(key)),
            plugins.has(key) && !String(key).endsWith(`/${plugins.get(key)}`) ? h("span", { class: "muted small" }, ` ${plugins.get(key)}`) : null),
          h("td", {}, repSpark(pts, total, hashColour(key), lo, hi)),
          h("td", { class: "num" }, fixed(last.after, 3)),
          h("td", { class: "num" }, `${won} / ${pts.length}`)),
      );
    }
    show($("reputation-table"), keys.length > 0);
    show($("reputation-empty"), keys.length === 0);
  }

  // Reputation between `lo` and `hi` (shared by every member) across every round (x: the
  // round's position in history); the dashed line is the starting reputation, 0.5.
  function repSpark(pts, total, stroke, lo, hi) {
    const W = 360, H = 40;
    const x = (i) => 6 + ((W - 12) * i) / (total - 1);
    const y = (v) => H - 5 - ((H - 10) * (Math.min(hi, Math.max(lo, v)) - lo)) / (hi - lo || 1);
    const svg = s("svg", { class: "rep-spark", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "reputation over rounds" });
    svg.append(s("line", { x1: 0, x2: W, y1: y(0.5), y2: y(0.5), class: "mid" }));
    const first = pts[0];
    const line = [];
    if (num(first.before)) line.push(`${x(Math.max(0, first.i - 0.5)).toFixed(1)},${y(first.before).toFixed(1)}`);
    for (const p of pts) line.push(`${x(p.i).toFixed(1)},${y(p.after).toFixed(1)}`);
    svg.append(s("polyline", { points: line.join(" "), fill: "none", stroke, "stroke-width": 2 }));
    for (const p of pts) {
      svg.append(s("circle", { cx: x(p.i), cy: y(p.after), r: 3.2, fill: p.rewarded ? stroke : "#fff", stroke, "stroke-width": 1.5 },
        s("title", {}, `${fixed(p.after, 3)}${p.rewarded ? " (rewarded)" : ""}`)));
    }
    return svg;
  }

  setInterval(renderUptime, 1000);
  start();
})();
