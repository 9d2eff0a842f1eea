/* tracehouse dashboard: figures, sorting, range picker, auto-refresh, alerts (the waterfall: waterfall.js).
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

  /* ---- filter forms: more attribute inputs, empty fields left out of the URL ------ */
  function initFilters() {
    document.querySelectorAll("[data-add-attr]").forEach(function (add) {
      add.addEventListener("click", function () {
        var label = el("label", null, "Attr ");
        var input = el("input");
        input.name = "attr";
        input.placeholder = "key=value";
        label.appendChild(input);
        document.getElementById(add.getAttribute("data-add-attr")).appendChild(label);
        input.focus();
      });
    });
    document.querySelectorAll("form.filters").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("input, select").forEach(function (i) { if (!i.value) i.disabled = true; });
      });
    });
  }

  /* ---- alerts: JSON API calls (CSRF header when signed in) ------------------------- */
  function api(method, url, body) {
    var headers = {"Accept": "application/json"};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    var meta = document.querySelector("meta[name=csrf-token]");
    if (meta && meta.content) headers["X-CSRF-Token"] = meta.content;
    return fetch(url, {method: method, headers: headers, credentials: "same-origin",
                       body: body === undefined ? undefined : JSON.stringify(body)}).then(function (r) {
      return r.text().then(function (t) {
        var d = null;
        try { d = t ? JSON.parse(t) : null; } catch (e) { d = null; }
        if (!r.ok) throw new Error(apiError(r, d, t));
        return d;
      });
    });
  }

  function apiError(r, d, text) {
    var msg = "";
    if (d && typeof d.error === "string") msg = d.error;  // every API error: {"error": reason}
    else msg = (text || "").slice(0, 300);
    return r.status + " " + (msg || r.statusText);
  }

  function showError(box, err) {
    if (!box) return;
    box.textContent = err ? String(err.message || err) : "";
    box.hidden = !err;
  }

  function splitMatchers(text) {
    // "a=b, c=~x|y" → ["a=b", "c=~x|y"]; a comma only separates before the next "name<op>"
    return text.split(/,\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=))/).map(function (m) { return m.trim(); })
      .filter(function (m) { return m; });
  }

  function initSilences() {
    var form = document.getElementById("silence-form");
    if (!form) return;
    var errBox = document.getElementById("silence-error");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      showError(errBox, null);
      var body = {matchers: splitMatchers(form.elements.matchers.value), duration: form.elements.duration.value.trim() || "2h",
                  comment: form.elements.comment.value, createdBy: form.elements.createdBy.value};
      var btn = document.getElementById("s-submit");
      btn.disabled = true;
      api("POST", "/api/alerts/silences", body).then(function () { window.location.reload(); })
        .catch(function (e) { btn.disabled = false; showError(errBox, e); });
    });
    document.querySelectorAll("[data-delete-silence]").forEach(function (b) {
      b.addEventListener("click", function () {
        b.disabled = true;
        api("DELETE", "/api/alerts/silences/" + encodeURIComponent(b.getAttribute("data-delete-silence")))
          .then(function () { window.location.reload(); })
          .catch(function (e) { b.disabled = false; showError(errBox, e); });
      });
    });
    document.querySelectorAll("[data-silence-for]").forEach(function (b) {
      b.addEventListener("click", function () {
        form.elements.matchers.value = b.getAttribute("data-silence-for");
        form.scrollIntoView({behavior: "smooth", block: "center"});
        form.elements.comment.focus();
      });
    });
  }

  /* ---- alerts: rule editor ----------------------------------------------------------- */
  function kvLines(text, what) {
    var out = {}, n = 0;
    text.split("\n").forEach(function (line) {
      line = line.trim();
      if (!line) return;
      var i = line.indexOf("=");
      if (i <= 0) throw new Error(what + ": \"" + line + "\" is not key=value");
      out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
      n++;
    });
    return n ? out : null;
  }

  function initRuleEditor() {
    var form = document.getElementById("rule-form");
    if (!form) return;
    var f = form.elements, errBox = document.getElementById("rule-error"), status = document.getElementById("r-status");
    var ruleId = form.getAttribute("data-rule-id"), qs = form.getAttribute("data-qs");

    function kind() { return f.kind.value; }

    function applyKind() {
      form.querySelectorAll("[data-kinds]").forEach(function (lbl) {
        var on = lbl.getAttribute("data-kinds").split(" ").indexOf(kind()) >= 0;
        lbl.hidden = !on;
      });
      if (kind() === "middleware" && !ruleId && f.op.value === ">" && (f.threshold.value === "" || f.threshold.value === "0.05")) {
        f.op.value = "==";
        f.threshold.value = "0";
      }
    }
    f.kind.addEventListener("change", applyKind);
    applyKind();

    function val(name) {
      var e = f[name];
      if (!e) return "";
      var lbl = e.closest("[data-kinds]");
      return lbl && lbl.hidden ? "" : String(e.value).trim();
    }

    function body(forPreview) {
      var b = {alert: val("alert") || (forPreview ? "Preview" : ""), kind: kind()};
      ["group", "interval", "service", "operation", "metric", "aggregation", "target", "query", "window", "op",
       "for", "keep_firing_for"].forEach(function (k) { var v = val(k); if (v) b[k] = v; });
      if (kind() === "red") b.signal = val("signal");
      if (kind() === "absence") b.signal = val("absence_signal");
      var thr = val("threshold");
      if (thr !== "") {
        var num = Number(thr);
        if (isNaN(num)) throw new Error("threshold must be a number");
        b.threshold = num;
      }
      var lim = val("limit");
      if (lim !== "") {
        if (!/^[0-9]+$/.test(lim)) throw new Error("limit must be a whole number");
        b.limit = Number(lim);
      }
      var gb = val("group_by");
      if (gb) b.group_by = gb.split(",").map(function (x) { return x.trim(); }).filter(Boolean);
      var filters = kvLines(val("filters"), "filters");
      if (filters) b.filters = filters;
      var labels = kvLines(f.labels.value, "labels") || {};
      if (f.severity.value) labels.severity = f.severity.value;
      if (Object.keys(labels).length) b.labels = labels;
      var ann = kvLines(f.annotations.value, "annotations");
      if (ann) b.annotations = ann;
      if (f.snapshot.value) b.action = {snapshot: f.snapshot.value};
      if (f.nodata_state.value && f.nodata_state.value !== "ok") b.nodata_state = f.nodata_state.value;
      if (!f.enabled.checked) b.enabled = false;
      return b;
    }

    function say(text) { status.textContent = text || ""; }

    document.getElementById("r-preview").addEventListener("click", function () {
      showError(errBox, null);
      var b;
      try { b = body(true); } catch (e) { showError(errBox, e); return; }
      say("evaluating…");
      api("POST", "/api/alerts/rules/preview", b).then(function (res) { say(""); renderPreview(res); })
        .catch(function (e) { say(""); showError(errBox, e); });
    });

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      showError(errBox, null);
      var b;
      try { b = body(false); } catch (e) { showError(errBox, e); return; }
      say("saving…");
      var req = ruleId ? api("PUT", "/api/alerts/rules/" + encodeURIComponent(ruleId), b)
                       : api("POST", "/api/alerts/rules", b);
      req.then(function () { window.location.href = "/alerts" + (qs ? "?" + qs : "") + "#alert-rules"; })
        .catch(function (e) { say(""); showError(errBox, e); });
    });

    var del = document.getElementById("r-delete");
    if (del) {
      del.addEventListener("click", function () {
        if (!del.classList.contains("armed")) {  // two clicks instead of a confirm() dialog
          del.classList.add("armed");
          del.textContent = "Click again to delete";
          setTimeout(function () { del.classList.remove("armed"); del.textContent = "Delete"; }, 4000);
          return;
        }
        showError(errBox, null);
        api("DELETE", "/api/alerts/rules/" + encodeURIComponent(ruleId))
          .then(function () { window.location.href = "/alerts" + (qs ? "?" + qs : ""); })
          .catch(function (e) { showError(errBox, e); });
      });
    }
  }

  function renderPreview(res) {
    var box = document.getElementById("preview-body");
    box.replaceChildren();
    var samples = res.samples || [];
    var hits = samples.filter(function (s) { return s.matches; }).length;
    var cond = (res.op || "") + " " + res.threshold;
    box.appendChild(el("p", "hint", samples.length + " series at " + new Date(res.now_ns / 1e6).toISOString() +
      "; " + hits + " match " + cond));
    if (!samples.length) {
      box.appendChild(el("p", "empty", "No data: the expression returned no rows in its window."));
      return;
    }
    var t = el("table", "grid");
    t.id = "preview-table";
    var head = el("tr");
    ["Labels", "Value", "Condition"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    t.appendChild(el("thead")).appendChild(head);
    var tb = el("tbody");
    samples.slice(0, 200).forEach(function (s) {
      var tr = el("tr", s.matches ? "hit" : null);
      var td = el("td");
      var chips = el("span", "chips");
      Object.keys(s.labels || {}).sort().forEach(function (k) {
        var c = el("span", "chip");
        c.appendChild(el("b", null, k));
        c.appendChild(document.createTextNode("=" + s.labels[k]));
        chips.appendChild(c);
      });
      if (!chips.childNodes.length) chips.appendChild(el("span", "sub", "(no labels)"));
      td.appendChild(chips);
      tr.appendChild(td);
      tr.appendChild(el("td", "num preview-value", s.value === null ? "NaN" : formatValue(s.value)));
      var cell = el("td");
      cell.appendChild(el("span", "badge " + (s.matches ? "st-firing" : "ok"), s.matches ? "would fire" : "ok"));
      tr.appendChild(cell);
      tb.appendChild(tr);
    });
    t.appendChild(tb);
    box.appendChild(t);
    if (samples.length > 200) box.appendChild(el("p", "hint", "first 200 of " + samples.length + " series"));
  }

  function formatValue(v) {
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en") : String(Number(v.toPrecision(4)));
  }

  /* ---- storage: retention changes go to the JSON API (admins only; the server checks) ---- */
  function initRetention() {
    var form = document.getElementById("retention-form");
    if (!form) return;
    var errBox = document.getElementById("retention-error");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var body = {}, changed = [];
      form.querySelectorAll("input[type=number][name]").forEach(function (inp) {
        var v = inp.value.trim();
        if (v && v !== inp.defaultValue) { body[inp.name] = Number(v); changed.push(inp.name); }
      });
      if (!changed.length) { location.href = "/storage"; return; }
      api("PUT", "/api/storage/retention", body).then(function () {
        location.href = "/storage?changed=" + encodeURIComponent(changed.sort().join(","));
      }, function (err) { showError(errBox, err); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    initSort();
    initRetention();
    initRange();
    initFilters();
    initSilences();
    initRuleEditor();
    renderFigures();
  });
})();
