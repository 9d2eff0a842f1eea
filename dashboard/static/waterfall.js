/* The trace waterfall, drawn from the compact row lists in #wf-data (see dashboard/waterfall.py).
   Only the rows in view (plus a margin) exist in the DOM, so a trace of 50,000 spans scrolls like
   one of 50; collapsing a subtree re-lists the visible rows. A span's details are fetched from
   /api/traces/{trace}/spans/{span} when it is selected. Everything is written with textContent. */
(function () {
  "use strict";

  var ROW = 22, MARGIN = 30;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function fmtMs(v) {
    return v >= 1000 ? (v / 1000).toFixed(2) + " s" : v >= 10 ? v.toFixed(0) + " ms" : v.toFixed(2) + " ms";
  }

  function init() {
    var wf = document.getElementById("waterfall");
    var dataEl = document.getElementById("wf-data");
    if (!wf || !dataEl) return;
    var d = JSON.parse(dataEl.textContent);
    var body = document.getElementById("wf-body");
    var traceId = wf.getAttribute("data-trace");
    var n = d.depth.length;
    var collapsed = new Uint8Array(n);
    var visible = [], drawn = [-1, -1], selected = null, rowOf = null, pending = 0;

    function sid(i) { return d.ids.substr(i * 16, 16); }

    function relist() {
      visible = [];
      for (var i = 0; i < n; i++) {
        visible.push(i);
        if (collapsed[i]) {
          var dep = d.depth[i];
          while (i + 1 < n && d.depth[i + 1] > dep) i++;
        }
      }
      body.style.height = (visible.length * ROW) + "px";
      draw(true);
    }

    function row(i, k) {
      var f = d.flags[i], id = sid(i);
      var r = el("div", "wf-row" + (f & 2 ? " crit" : "") + (f & 1 ? " err" : "") + (collapsed[i] ? " collapsed" : "") +
                 (id === selected ? " selected" : ""));
      r.style.top = (k * ROW) + "px";
      r.setAttribute("data-span", id);
      r.setAttribute("data-row", i);
      r.setAttribute("data-depth", d.depth[i]);
      r.setAttribute("data-service", d.services[d.svc[i]]);
      var name = el("div", "wf-name");
      name.style.paddingLeft = (d.depth[i] * 14 + 4) + "px";
      if (f & 4) {
        var b = el("button", "tog", collapsed[i] ? "\u25b8" : "\u25be");
        b.type = "button";
        b.setAttribute("aria-label", collapsed[i] ? "expand" : "collapse");
        name.appendChild(b);
      } else {
        name.appendChild(el("span", "tog-sp"));
      }
      var color = d.colors[d.svc[i]];
      var dot = el("i");
      dot.style.background = color;
      name.appendChild(dot);
      name.appendChild(el("span", "svc", d.services[d.svc[i]]));
      name.appendChild(document.createTextNode(" "));
      name.appendChild(el("span", "op", d.names[d.op[i]]));
      name.title = d.services[d.svc[i]] + " \u00b7 " + d.names[d.op[i]];
      r.appendChild(name);
      var lane = el("div", "wf-lane");
      var off = d.start[i] * 100 / d.total_ns;
      var w = Math.max(0.15, Math.min(d.dur[i] * 100 / d.total_ns, 100 - off));
      var bar = el("div", "wf-bar");
      bar.style.left = off.toFixed(3) + "%";
      bar.style.width = w.toFixed(3) + "%";
      bar.style.background = color;
      lane.appendChild(bar);
      var end = off + w;
      var lab = el("span", "wf-dur" + (end > 88 ? " inside" : ""), fmtMs(d.dur[i] / 1e6));
      lab.style.left = end.toFixed(3) + "%";
      lane.appendChild(lab);
      r.appendChild(lane);
      return r;
    }

    function draw(force) {
      var rect = body.getBoundingClientRect();
      var top = Math.max(0, -rect.top), bottom = Math.max(0, Math.min(rect.height, window.innerHeight - rect.top));
      var first = Math.max(0, Math.floor(top / ROW) - MARGIN);
      var last = Math.min(visible.length, Math.ceil(bottom / ROW) + MARGIN);
      if (!force && first === drawn[0] && last === drawn[1]) return;
      drawn = [first, last];
      var frag = document.createDocumentFragment();
      for (var k = first; k < last; k++) frag.appendChild(row(visible[k], k));
      body.replaceChildren(frag);
    }

    var queued = false;
    function onScroll() {
      if (queued) return;
      queued = true;
      window.requestAnimationFrame(function () { queued = false; draw(false); });
    }
    window.addEventListener("scroll", onScroll, {passive: true});
    window.addEventListener("resize", onScroll);

    function indexOf(id) {
      if (!rowOf) {
        rowOf = Object.create(null);
        for (var i = 0; i < n; i++) rowOf[sid(i)] = i;
      }
      var i = rowOf[id];
      return i === undefined ? -1 : i;
    }

    function reveal(i) {
      // un-collapse every ancestor: the nearest earlier row of each smaller depth
      var dep = d.depth[i];
      for (var j = i - 1; j >= 0 && dep > 0; j--) {
        if (d.depth[j] < dep) { collapsed[j] = 0; dep = d.depth[j]; }
      }
      relist();
      var k = visible.indexOf(i);
      var y = body.getBoundingClientRect().top + window.scrollY + k * ROW - window.innerHeight / 3;
      window.scrollTo(0, Math.max(0, y));
      draw(true);
    }

    body.addEventListener("click", function (ev) {
      var r = ev.target.closest(".wf-row");
      if (!r) return;
      var i = +r.getAttribute("data-row");
      if (ev.target.classList.contains("tog")) {
        collapsed[i] = collapsed[i] ? 0 : 1;
        relist();
        return;
      }
      select(sid(i), false);
    });
    document.getElementById("expand-all").addEventListener("click", function () { collapsed.fill(0); relist(); });
    document.getElementById("collapse-all").addEventListener("click", function () {
      for (var i = 0; i < n; i++) collapsed[i] = d.flags[i] & 4 ? 1 : 0;
      relist();
    });
    document.getElementById("d-close").addEventListener("click", function () {
      document.getElementById("details").hidden = true;
      selected = null;
      draw(true);
    });
    document.querySelectorAll(".span-link").forEach(function (a) {
      a.addEventListener("click", function (ev) { ev.preventDefault(); select(a.getAttribute("data-span"), true); });
    });

    function kvTable(title, obj) {
      var sec = el("section");
      if (title) sec.appendChild(el("h4", null, title));
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

    function select(id, scroll) {
      var i = indexOf(id);
      if (i < 0) return;
      selected = id;
      if (scroll) reveal(i); else draw(true);
      var mine = ++pending;
      var box = document.getElementById("details");
      var out = document.getElementById("d-body");
      document.getElementById("d-title").textContent = d.services[d.svc[i]] + " \u00b7 " + d.names[d.op[i]];
      out.replaceChildren(el("p", "empty", "loading\u2026"));
      box.hidden = false;
      box.setAttribute("data-span", id);
      fetch("/api/traces/" + encodeURIComponent(traceId) + "/spans/" + encodeURIComponent(id),
            {headers: {"Accept": "application/json"}, credentials: "same-origin"})
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (s) { if (mine === pending) showDetails(s); })
        .catch(function (e) { if (mine === pending) out.replaceChildren(el("p", "warn", "could not load the span: " + e.message)); });
    }

    function showDetails(s) {
      var out = document.getElementById("d-body");
      out.replaceChildren();
      out.appendChild(kvTable("Span", {
        "span id": s.span_id, "parent": s.parent_span_id || "(root)", kind: s.kind,
        duration: s.duration_ms + " ms", status: s.status.code + (s.status.message ? ": " + s.status.message : ""),
        scope: s.scope.name + " " + s.scope.version
      }));
      out.appendChild(kvTable("Attributes", s.attributes));
      var ev = el("section");
      ev.appendChild(el("h4", null, "Events (" + s.events.length + ")"));
      s.events.forEach(function (e) {
        ev.appendChild(el("div", "ev-name", "+" + ((e.time_ns - s.start_ns) / 1e6).toFixed(2) + " ms  " + e.name));
        ev.appendChild(kvTable("", e.attributes).querySelector("table") || el("span"));
      });
      out.appendChild(ev);
      var ln = el("section");
      ln.appendChild(el("h4", null, "Links (" + s.links.length + ")"));
      s.links.forEach(function (l) {
        var a = el("a", "mono", l.trace_id + " / " + l.span_id);
        a.href = "/traces/" + encodeURIComponent(l.trace_id) + "?span=" + encodeURIComponent(l.span_id);
        ln.appendChild(a);
      });
      out.appendChild(ln);
      out.appendChild(kvTable("Resource", s.resource));
      // the span's logs: its own time window, one minute before to ten after
      var q = new URLSearchParams({since: String(s.start_ns - 60e9), until: String(s.end_ns + 600e9),
                                   trace_id: s.trace_id, span_id: s.span_id});
      document.getElementById("d-logs").href = "/logs?" + q.toString();
    }

    relist();
    var want = new URLSearchParams(window.location.search).get("span");
    if (want) select(want, true);
  }

  document.addEventListener("DOMContentLoaded", init);
})();
