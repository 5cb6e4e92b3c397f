// The live panel component (console/live_panel.py): draws a panel (console/panel.py) and,
// when the page gives it a source, asks the console's server for the next panel every
// refresh interval (console/live_channel.py), in one request with the page's other panels. Every value is set with textContent: task
// ids, queries and errors are drawn as text, never as markup.

const BACKOFF_MAX_SECONDS = 60;
let plotlyLoading = null;

function loadPlotly(src) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => { plotlyLoading = null; reject(new Error("Plotly did not load")); };
      document.head.appendChild(script);
    });
  }
  return plotlyLoading;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function cellNode(tag, value) {
  const node = el(tag);
  if (value && typeof value === "object") {
    node.textContent = String(value.text);
    if (value.title) node.title = String(value.title);
    if (value.color) node.style.color = String(value.color);
    if (value.color || value.title) node.style.whiteSpace = "nowrap";   // a status, a time
    if (value.short) node.className = "lp-short";
  } else {
    node.textContent = value === null || value === undefined ? "—" : String(value);
  }
  return node;
}

function drawMetrics(block) {
  const grid = el("div", "lp-metrics");
  grid.style.gridTemplateColumns = `repeat(${block.per_row}, minmax(0, 1fr))`;
  for (const cell of block.cells) {
    const card = el("div", block.border ? "lp-metric lp-bordered" : "lp-metric");
    card.setAttribute("data-testid", "lp-metric");
    const label = el("div", "lp-metric-label", cell.label);
    if (cell.help) label.title = cell.help;
    card.append(label, el("div", "lp-metric-value", cell.value));
    grid.append(card);
  }
  return grid;
}

function drawTable(block, view) {
  if (!block.rows.length) return el("div", "lp-caption", block.empty);   // "" says nothing
  const wrap = el("div", "lp-table-wrap");
  if (block.name) wrap.dataset.table = block.name;
  const table = el("table", "lp-table");
  const head = el("tr");
  if (block.selectable) head.append(el("th", "lp-pick"));
  block.columns.forEach((name, i) => {
    const th = el("th", null, name);
    if (block.widths[i]) th.style.minWidth = `${block.widths[i]}px`;
    head.append(th);
  });
  table.appendChild(el("thead")).append(head);
  const body = table.appendChild(el("tbody"));
  block.rows.forEach((row, r) => {
    const tr = el("tr");
    const id = block.ids ? block.ids[r] : null;
    if (block.selectable && id !== null) {
      const pick = el("td", "lp-pick");
      const box = el("input");
      box.type = "checkbox";
      box.checked = view.selected.has(id);
      box.setAttribute("aria-label", "Select row");
      box.addEventListener("change", () => view.toggle(id, box.checked));
      pick.append(box);
      tr.append(pick);
      if (box.checked) tr.className = "lp-selected";
    }
    row.forEach((value) => tr.append(cellNode("td", value)));
    body.append(tr);
  });
  wrap.append(table);
  return wrap;
}

function drawFigure(block, view) {
  // The same holder for the same chart on every update: Plotly.react then changes what
  // moved instead of drawing a new chart.
  const index = view.figuresDrawn++;
  const holder = view.figureHolders[index] || (view.figureHolders[index] = el("div", "lp-figure"));
  const figure = block.figure;
  if (!view.plotly) {
    holder.replaceChildren(el("div", "lp-caption", "Charts are drawn when the console is served by streamlit run app.py."));
    return holder;
  }
  loadPlotly(view.plotly).then((Plotly) => {
    Plotly.react(holder, figure.data, figure.layout, { displayModeBar: false, responsive: true });
  }).catch(() => holder.append(el("div", "lp-caption", "The chart library did not load.")));
  return holder;
}

function drawBlocks(blocks, view, parent) {
  blocks.forEach((block) => {
    switch (block.kind) {
      case "heading": {
        const line = el("div", "lp-heading");
        line.append(el("strong", null, block.title));
        if (block.note) line.append(el("span", "lp-note", ` · ${block.note}`));
        parent.append(line);
        break;
      }
      case "line": {
        const line = el("div", "lp-line");
        for (const part of block.parts) line.append(el(part.strong ? "strong" : "span", null, part.text));
        parent.append(line);
        break;
      }
      case "caption": parent.append(el("div", "lp-caption", block.text)); break;
      case "warning": parent.append(el("div", "lp-warning", block.text)); break;
      case "metrics": parent.append(drawMetrics(block)); break;
      case "table": parent.append(drawTable(block, view)); break;
      case "figure": parent.append(drawFigure(block, view)); break;
      case "row": {
        const row = el("div", "lp-row");
        for (const column of block.columns) drawBlocks(column, view, row.appendChild(el("div", "lp-column")));
        parent.append(row);
        break;
      }
      default: break;
    }
  });
}

// One poll a tick for every live panel of the page (the sidebar's and the page's): the
// request, not the answer, was most of what a poll cost the server.
function pagePoller() {
  if (!window.__livePanelPoller) window.__livePanelPoller = createPagePoller();
  return window.__livePanelPoller;
}

function createPagePoller() {
  const members = new Set();
  let timer = null;
  let backoff = null;
  const interval = () => Math.min(...Array.from(members, (m) => m.source.seconds));
  const schedule = () => {
    clearTimeout(timer);
    if (members.size) timer = setTimeout(tick, (backoff || interval()) * 1000);
  };
  async function tick() {
    if (!members.size) return;
    if (document.hidden) { schedule(); return; }           // a background tab waits
    const asked = Array.from(members);
    const { path, tokens_header: tokensHeader, seen_header: seenHeader } = asked[0].source;
    try {
      const answer = await fetch(path, {
        headers: { [tokensHeader]: asked.map((m) => m.source.token).join(" "),
                   [seenHeader]: asked.map((m) => m.etag || "-").join(" ") },
        cache: "no-store", credentials: "same-origin" });
      if (!answer.ok) throw new Error(`The server answered ${answer.status}.`);
      const { answers } = await answer.json();
      asked.forEach((m, i) => { if (members.has(m)) m.deliver(answers[i] || { status: 503 }); });
      backoff = null;
    } catch (error) {
      asked.forEach((m) => { if (members.has(m)) m.deliver({ status: 0 }); });
      backoff = Math.min((backoff || interval()) * 2, BACKOFF_MAX_SECONDS);
    }
    schedule();
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && members.size) { clearTimeout(timer); tick(); }
  });
  return {
    add(member) { members.add(member); schedule(); },
    remove(member) { members.delete(member); if (!members.size) clearTimeout(timer); },
  };
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export default function ({ data, parentElement, setStateValue }) {
  const root = parentElement.querySelector(".lp-root");
  const source = data.source;
  const view = {
    plotly: source ? source.plotly : null,
    selected: new Set(data.selected || []),
    figureHolders: [],
    figuresDrawn: 0,
    toggle(id, on) {
      if (on) this.selected.add(id); else this.selected.delete(id);
      setStateValue("selected", Array.from(this.selected));
    },
  };
  const body = el("div", "lp-body");
  const status = el("div", "lp-caption lp-status");
  root.replaceChildren(body, status);

  let panel = data.panel;
  let updated = new Date();
  let problem = null;
  const drawStatus = () => {
    status.textContent = problem ? `${problem} Last update ${clock(updated)}.` : `Updated ${clock(updated)}`;
    status.classList.toggle("lp-warning", Boolean(problem));
  };
  const draw = () => {
    const blocks = el("div");
    view.figuresDrawn = 0;
    drawBlocks(panel.blocks || [], view, blocks);
    body.replaceChildren(...blocks.childNodes);
    drawStatus();
  };
  draw();
  if (!source) return undefined;

  const member = {
    source,
    etag: null,
    deliver(answer) {                                // one panel's part of the page's answer
      if (answer.status === 200) {
        panel = answer.panel;
        this.etag = answer.etag;
        problem = null; updated = new Date();
        draw();
        return;
      }
      if (answer.status === 304) { problem = null; updated = new Date(); }   // unchanged
      else problem = answer.error || "The console's server did not answer; retrying.";
      if (answer.status === 401) pagePoller().remove(member);   // the session is gone
      drawStatus();
    },
  };
  pagePoller().add(member);
  return () => pagePoller().remove(member);
}
