/* tracehouse dashboard: figures, sorting, range picker, auto-refresh, waterfall.
   Data comes from <script type="application/json"> blocks and is only ever written with
   textContent — never innerHTML. */
(function () {
  "use strict";

  function readJSON(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  /* ---- Plotly figures -------------------------------------------------------------- */
  function loadPlotly(cb) {
    if (window.Plotly) return cb();
    var s = document.createElement("script");
    s.src = "/static/plotly.min.js";
    s.onload = cb;
    document.head.appendChild(s);
  }

  function renderFigures() {
    var figs = document.querySelectorAll("[data-fig]");
    if (!figs.length) return;
    loadPlotly(function () {
      figs.forEach(function (div) {
        var fig = readJSON("data-" + div.getAttribute("data-fig"));
        if (!fig) return;
        window.Plotly.newPlot(div, fig.data, fig.layout, {displaylogo: false, responsive: true}).then(function () {
          div.setAttribute("data-rendered", "1");
          if (div.classList.contains("clickable")) {
            div.on("plotly_click", function (ev) {
              var p = ev.points && ev.points[0];
              if (p && p.customdata) window.location.href = "/traces/" + encodeURIComponent(p.customdata) + window.location.search;
            });
          }
        });
      });
    });
  }

  /* ---- sortable tables ------------------------------------------------------------- */
  function initSort() {
    document.querySelectorAll("table.sortable th[data-sort]").forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () {
        var table = th.closest("table");
        var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
        var num = th.getAttribute("data-sort") === "num";
        var asc = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var tbody = table.tBodies[0];
        var rows = Array.prototype.slice.call(tbody.rows);
        rows.sort(function (a, b) {
          var x = a.cells[idx].getAttribute("data-v") || "", y = b.cells[idx].getAttribute("data-v") || "";
          var c = num ? (parseFloat(x) || 0) - (parseFloat(y) || 0) : x.localeCompare(y);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { tbody.appendChild(r); });
      });
    });
  }

  /* ---- range picker and auto-refresh --------------------------------------------- */
  function initRange() {
    document.querySelectorAll("[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () {
        var form = sel.form;
        if (sel.name === "since") {
          form.querySelectorAll("input[name=until], input[name=since_abs]").forEach(function (i) { i.value = ""; });
        }
        submitClean(form);
      });
    });
    var form = document.getElementById("range-form");
    if (form) form.addEventListener("submit", function (ev) { ev.preventDefault(); submitClean(form); });
    var secs = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
    if (secs > 0) setTimeout(function () { window.location.reload(); }, secs * 1000);
  }

  function submitClean(form) {
    var params = new URLSearchParams();
    var abs = form.querySelector("input[name=since_abs]");
    new FormData(form).forEach(function (v, k) {
      if (k === "since_abs") return;
      if (k === "since" && abs && abs.value) v = abs.value;
      if (v !== "" && !(k === "refresh" && v === "off")) params.append(k, v);
    });
    window.location.href = form.getAttribute("action") + "?" + params.toString();
  }

  /* ---- trace filters --------------------------------------------------------------- */
  function initFilters() {
    var add = document.getElementById("add-attr");
    if (!add) return;
    add.addEventListener("click", function () {
      var label = el("label", null, "Attr ");
      var input = el("input");
      input.name = "attr";
      input.placeholder = "key=value";
      label.appendChild(input);
      document.getElementById("attr-list").appendChild(label);
      input.focus();
    });
    var form = document.getElementById("trace-filters");
    form.addEventListener("submit", function () {
      form.querySelectorAll("input").forEach(function (i) { if (!i.value) i.disabled = true; });
    });
  }

  /* ---- waterfall ------------------------------------------------------------------- */
  function initWaterfall() {
    var wf = document.getElementById("waterfall");
    if (!wf) return;
    var rows = Array.prototype.slice.call(wf.querySelectorAll(".wf-row"));
    var spans = readJSON("span-data") || {};

    function setCollapsed(row, collapsed) {
      var i = rows.indexOf(row), depth = +row.getAttribute("data-depth");
      row.classList.toggle("collapsed", collapsed);
      var btn = row.querySelector(".tog");
      if (btn) { btn.textContent = collapsed ? "▸" : "▾"; btn.setAttribute("aria-label", collapsed ? "expand" : "collapse"); }
      var hideBelow = null;
      for (var j = i + 1; j < rows.length; j++) {
        var d = +rows[j].getAttribute("data-depth");
        if (d <= depth) break;
        if (collapsed) { rows[j].hidden = true; continue; }
        if (hideBelow !== null && d > hideBelow) { rows[j].hidden = true; continue; }
        hideBelow = null;
        rows[j].hidden = false;
        if (rows[j].classList.contains("collapsed")) hideBelow = d;
      }
    }

    wf.addEventListener("click", function (ev) {
      var row = ev.target.closest(".wf-row");
      if (!row) return;
      if (ev.target.classList.contains("tog")) { setCollapsed(row, !row.classList.contains("collapsed")); return; }
      showDetails(row.getAttribute("data-span"));
    });
    document.getElementById("expand-all").addEventListener("click", function () {
      rows.forEach(function (r) { r.hidden = false; r.classList.remove("collapsed"); var b = r.querySelector(".tog"); if (b) b.textContent = "▾"; });
    });
    document.getElementById("collapse-all").addEventListener("click", function () {
      rows.forEach(function (r) {
        var d = +r.getAttribute("data-depth");
        r.hidden = d > 0;
        var b = r.querySelector(".tog");
        if (b) { r.classList.add("collapsed"); b.textContent = "▸"; }
      });
    });
    document.getElementById("d-close").addEventListener("click", function () {
      document.getElementById("details").hidden = true;
      rows.forEach(function (r) { r.classList.remove("selected"); });
    });
    document.querySelectorAll(".span-link").forEach(function (a) {
      a.addEventListener("click", function (ev) { ev.preventDefault(); showDetails(a.getAttribute("data-span")); });
    });

    function kvTable(title, obj) {
      var sec = el("section");
      sec.appendChild(el("h4", null, title));
      var keys = obj ? Object.keys(obj) : [];
      if (!keys.length) { sec.appendChild(el("p", "empty", "none")); return sec; }
      var t = el("table", "kv");
      keys.sort().forEach(function (k) {
        var tr = el("tr");
        tr.appendChild(el("th", null, k));
        var v = obj[k];
        tr.appendChild(el("td", null, typeof v === "object" ? JSON.stringify(v) : v));
        t.appendChild(tr);
      });
      sec.appendChild(t);
      return sec;
    }

    function showDetails(id) {
      var s = spans[id];
      if (!s) return;
      rows.forEach(function (r) { r.classList.toggle("selected", r.getAttribute("data-span") === id); });
      var body = document.getElementById("d-body");
      body.replaceChildren();
      document.getElementById("d-title").textContent = s.service + " · " + s.name;
      body.appendChild(kvTable("Span", {
        "span id": s.span_id, "parent": s.parent_span_id || "(root)", kind: s.kind,
        duration: s.duration_ms + " ms", status: s.status.code + (s.status.message ? ": " + s.status.message : ""),
        scope: s.scope.name + " " + s.scope.version
      }));
      body.appendChild(kvTable("Attributes", s.attributes));
      var ev = el("section");
      ev.appendChild(el("h4", null, "Events (" + s.events.length + ")"));
      s.events.forEach(function (e) {
        ev.appendChild(el("div", "ev-name", "+" + ((e.time_ns - s.start_ns) / 1e6).toFixed(2) + " ms  " + e.name));
        ev.appendChild(kvTable("", e.attributes).querySelector("table") || el("span"));
      });
      body.appendChild(ev);
      var ln = el("section");
      ln.appendChild(el("h4", null, "Links (" + s.links.length + ")"));
      s.links.forEach(function (l) {
        var a = el("a", "mono", l.trace_id + " / " + l.span_id);
        a.href = "/traces/" + encodeURIComponent(l.trace_id);
        ln.appendChild(a);
      });
      body.appendChild(ln);
      body.appendChild(kvTable("Resource", s.resource));
      document.getElementById("details").hidden = false;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    initSort();
    initRange();
    initFilters();
    initWaterfall();
    renderFigures();
  });
})();
