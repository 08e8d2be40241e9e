// omniseg view: slide + label overlay (Deep Zoom tiles from the omniseg server), legend,
// object table, and a synchronised second view in compare mode. No network but this server.
"use strict";
const state = { results: [], compare: [], cohort: [], current: 0, hidden: new Set(), viewers: {}, sortKey: "id", sortUp: true, objects: [] };

function tileSource(side, index, info, kind) {
  return {
    height: info.height, width: info.width, tileSize: info.tile, tileOverlap: 0,
    minLevel: 0, maxLevel: info.max_level,
    getTileUrl: (level, x, y) => {
      const ext = kind === "slide" ? "jpeg" : "png";
      const hide = kind === "labels" && state.hidden.size ? "?hide=" + [...state.hidden].join(",") : "";
      return `/tiles/${side}/${index}/${kind}/${level}/${x}_${y}.${ext}${hide}`;
    },
  };
}

function opacity() { return document.getElementById("opacity").value / 100; }

function openView(side, index, info) {
  let viewer = state.viewers[side];
  if (!viewer) {
    viewer = OpenSeadragon({ id: "view-" + side, prefixUrl: "/static/openseadragon/images/",
      showNavigator: side === "a", animationTime: 0.3, crossOriginPolicy: false });
    state.viewers[side] = viewer;
  }
  viewer.open([{ tileSource: tileSource(side, index, info, "slide") },
               { tileSource: tileSource(side, index, info, "labels"), opacity: opacity() }]);
  document.getElementById("caption-" + side).textContent =
    `${side === "b" ? "compare: " : ""}${info.name} (${info.slide}, ${info.width} x ${info.height} px, ${info.mpp} µm/px)`;
}

function reloadLabels() {
  for (const [side, viewer] of Object.entries(state.viewers)) {
    const group = side === "b" ? state.compare : state.results;
    const info = group[state.current];
    if (!info || viewer.world.getItemCount() < 2) continue;
    const old = viewer.world.getItemAt(1);
    viewer.addTiledImage({ tileSource: tileSource(side, state.current, info, "labels"), opacity: opacity(), index: 1,
      success: () => viewer.world.removeItem(old) });
  }
}

function renderLegend(info) {
  const box = document.getElementById("legend");
  box.innerHTML = "";
  for (const e of info.legend) {
    const row = document.createElement("label");
    row.style.display = "block";
    const area = e.area_mm2 == null ? "" : `, ${e.area_mm2.toFixed(4)} mm²`;
    const count = e.count == null ? "" : ` (${e.count}${area})`;
    row.innerHTML = `<input type="checkbox" data-value="${e.value}" ${state.hidden.has(e.value) ? "" : "checked"}>` +
      `<span class="swatch" style="background: rgb(${e.colour.join(",")})"></span>${e.name}${count}`;
    row.querySelector("input").addEventListener("change", (ev) => {
      const v = Number(ev.target.dataset.value);
      if (ev.target.checked) state.hidden.delete(v); else state.hidden.add(v);
      reloadLabels();
    });
    box.appendChild(row);
  }
}

const COLUMNS = ["id", "class", "area_um2", "mean_probability"];

function renderObjects() {
  const table = document.getElementById("objects");
  table.tHead.innerHTML = "<tr>" + COLUMNS.map((c) => `<th data-key="${c}">${c}</th>`).join("") + "</tr>";
  for (const th of table.tHead.querySelectorAll("th")) {
    th.addEventListener("click", () => {
      state.sortUp = state.sortKey === th.dataset.key ? !state.sortUp : true;
      state.sortKey = th.dataset.key;
      renderObjects();
    });
  }
  const key = state.sortKey, sign = state.sortUp ? 1 : -1;
  const rows = [...state.objects].sort((a, b) => {
    const x = Number(a[key]), y = Number(b[key]);
    return sign * (Number.isNaN(x) || Number.isNaN(y) ? String(a[key]).localeCompare(String(b[key])) : x - y);
  });
  table.tBodies[0].innerHTML = "";
  for (const o of rows) {
    const tr = document.createElement("tr");
    tr.dataset.id = o.id;
    tr.innerHTML = COLUMNS.map((c) => `<td>${o[c] ?? ""}</td>`).join("");
    tr.addEventListener("click", () => flyTo(o));
    table.tBodies[0].appendChild(tr);
  }
  document.getElementById("object-count").textContent = `(${state.objects.length})`;
}

function flyTo(o) {
  const info = state.results[state.current];
  const viewer = state.viewers.a;
  const pad = 0.5;
  const x0 = Number(o.bbox_min_x), y0 = Number(o.bbox_min_y), x1 = Number(o.bbox_max_x), y1 = Number(o.bbox_max_y);
  const w = (x1 - x0) * (1 + 2 * pad) + 1, h = (y1 - y0) * (1 + 2 * pad) + 1;
  const rect = new OpenSeadragon.Rect((x0 - (x1 - x0) * pad) / info.width, (y0 - (y1 - y0) * pad) / info.width,
    w / info.width, h / info.width);
  viewer.viewport.fitBounds(rect, true);
  document.body.dataset.flewTo = o.id;
}

function renderSlides() {
  const box = document.getElementById("slides");
  if (state.results.length < 2 && !state.cohort.length) { box.hidden = true; return; }
  box.innerHTML = "<h2>Results</h2>";
  state.results.forEach((r, i) => {
    const thumb = Math.max(0, r.max_level - Math.ceil(Math.log2(Math.max(r.width, r.height) / r.tile)));
    const div = document.createElement("div");
    div.className = "slide" + (i === state.current ? " current" : "");
    const counts = r.legend.filter((e) => e.count).map((e) => `${e.name} ${e.count}`).join(", ");
    div.innerHTML = `<img alt="" src="/tiles/a/${i}/slide/${thumb}/0_0.jpeg"><div><b>${r.name}</b><br>${counts}</div>`;
    div.addEventListener("click", () => show(i));
    box.appendChild(div);
  });
  for (const row of state.cohort.filter((r) => r.index === null || r.index === undefined)) {
    const div = document.createElement("div");
    div.className = "slide failed";
    div.textContent = `${row.slide}: ${row.status}${row.error ? " (" + row.error + ")" : ""}`;
    box.appendChild(div);
  }
}

async function show(i) {
  state.current = i;
  const info = state.results[i];
  openView("a", i, info);
  if (state.compare.length) openView("b", i, state.compare[i]);
  renderLegend(info);
  renderSlides();
  state.objects = await (await fetch(`/api/objects/a/${i}`)).json();
  renderObjects();
}

function syncViews() {
  const a = state.viewers.a, b = state.viewers.b;
  if (!a || !b) return;
  let leading = null;
  const follow = (from, to) => () => {
    if (leading && leading !== from) return;
    leading = from;
    to.viewport.zoomTo(from.viewport.getZoom(), null, true);
    to.viewport.panTo(from.viewport.getCenter(), true);
    leading = null;
  };
  a.addHandler("viewport-change", follow(a, b));
  b.addHandler("viewport-change", follow(b, a));
}

async function main() {
  const data = await (await fetch("/api/results")).json();
  state.results = data.results;
  state.compare = data.compare;
  state.cohort = data.cohort || [];
  if (state.compare.length) document.getElementById("pane-b").hidden = false;
  document.getElementById("opacity").addEventListener("input", () => {
    for (const viewer of Object.values(state.viewers)) {
      if (viewer.world.getItemCount() > 1) viewer.world.getItemAt(1).setOpacity(opacity());
    }
  });
  await show(0);
  syncViews();
  document.body.dataset.ready = "1";
}
main();
