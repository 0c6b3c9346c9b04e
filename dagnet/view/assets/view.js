/* dagnet view: the page side. Reads the model from the JSON block, lays out only
   the groups that are open, draws them as SVG. Each group is laid out on its own
   by dagnetLayered (layout.js), with its children's edges lifted by the Python
   side, so opening a block costs the layout of that block and its ancestors
   only, not of the whole graph. All text goes into the DOM through textContent. */
(function () {
  "use strict";
  var T0 = performance.now();
  var D = JSON.parse(document.getElementById("dagnet-data").textContent);
  var items = D.items, NS = "http://www.w3.org/2000/svg";
  var PAD = 12, LABEL_H = 18, GAP_X = 16, GAP_Y = 24, NODE_H = 36, DUMMY_W = 6;
  var expanded = new Set([0]), cache = new Map(), selected = -1, hits = new Set();
  var boxes = new Map(), view = {k: 1, x: 0, y: 0}, timings = {};
  var status = (D.diff && D.diff.status) || {};
  var $ = function (id) { return document.getElementById(id); };
  function el(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function h(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function isGroup(i) { return items[i].t === "g"; }
  function open(i) { return isGroup(i) && expanded.has(i); }
  function fmtInt(n) { return n === null || n === undefined ? "?" : n.toLocaleString("en-US"); }
  function short(n) {
    var s = [[1e9, "B"], [1e6, "M"], [1e3, "k"]];
    for (var k = 0; k < s.length; k++) if (n >= s[k][0]) {
      var v = n / s[k][0]; return v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0) + s[k][1];
    }
    return String(n);
  }
  function shapeText(it) { return it.shapeDims || it.shape || ""; }
  function lines(i) {
    var it = items[i];
    if (isGroup(i)) return [clip(it.title, 48), (it.params ? short(it.params) + " params" : it.size + " nodes")];
    if (it.family === "merge") return [it.mark || it.title];
    return [clip(it.title, 48), clip(shapeText(it), 56)];
  }
  function textW(s, px) { return s.length * px * 0.58; }
  function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }   // the details show it whole
  function nodeSize(i) {
    var it = items[i], ls = lines(i);
    if (!isGroup(i) && it.family === "merge") return {w: 30, h: 30};
    var w = Math.max(textW(ls[0], 12), ls[1] ? textW(ls[1], 10) : 0) + 18;
    return {w: Math.max(64, Math.min(w, 320)), h: NODE_H + (isGroup(i) ? 4 : 0)};
  }

  /* ---- layout of one open group (cached until it or a descendant changes) ---- */
  function layout(g) {
    if (cache.has(g)) return cache.get(g);
    var kids = items[g].children, local = new Map(), W = [], H = [], edges = [];
    kids.forEach(function (c, k) {
      local.set(c, k);
      var s = open(c) ? layout(c) : nodeSize(c); W.push(s.w); H.push(s.h);
    });
    (items[g].edges || []).forEach(function (e) { edges.push([local.get(e[0]), local.get(e[1])]); });
    var L = dagnetLayered(W, H, edges, {top: g === 0 ? PAD : LABEL_H + PAD / 2, pad: PAD, gapX: GAP_X,
                                        gapY: GAP_Y, dummyW: DUMMY_W});
    var pos = new Map(), routes = new Map();
    kids.forEach(function (c, k) { pos.set(c, {x: L.x[k], y: L.y[k], w: W[k], h: H[k]}); });
    L.routes.forEach(function (r) { routes.set(kids[r.a] + ">" + kids[r.b], r.via); });
    var titleW = g === 0 ? 0 : textW(items[g].title, 11) + 2 * PAD;
    var out = {w: Math.max(L.w, titleW), h: L.h, pos: pos, routes: routes};
    cache.set(g, out);
    return out;
  }
  function invalidate(g) { for (; g >= 0; g = items[g].parent) cache.delete(g); }

  /* ---- drawing ---- */
  var preorder = (function () {       // parents before children (a range comes after what it holds)
    var out = [], stack = [0];
    while (stack.length) {
      var i = stack.pop(); out.push(i);
      if (isGroup(i)) for (var k = items[i].children.length - 1; k >= 0; k--) stack.push(items[i].children[k]);
    }
    return out;
  })();
  function reps() {
    var rep = new Int32Array(items.length);
    for (var n = 1; n < preorder.length; n++) {
      var i = preorder[n], p = items[i].parent;
      rep[i] = rep[p] !== p ? rep[p] : (expanded.has(p) ? i : p);
    }
    return rep;
  }
  function drawNode(i, b) {
    var it = items[i], fam = isGroup(i) ? "block" : it.family, look = D.looks[fam] || D.looks.layer;
    var g = el("g", {"class": "dn-node", "data-id": i, "data-path": it.path,
                     transform: "translate(" + b.x.toFixed(1) + "," + b.y.toFixed(1) + ")"});
    var st = status[i] || (isGroup(i) && it.changed ? "contains" : "");
    var stroke = it.error ? "#c62828" : st === "added" ? "#2e7d32" : st === "changed" ? "#ef6c00"
      : st === "contains" ? "#ef6c00" : "#000";
    var a = {fill: look.fill === "none" ? "#fff" : look.fill, stroke: stroke,
             "stroke-width": (it.error || st) ? 2.5 : (look.style.indexOf("bold") >= 0 ? 2 : 0.9)};
    if (look.style.indexOf("dashed") >= 0 || st === "contains") a["stroke-dasharray"] = "4 3";
    var shape;
    if (look.shape === "circle" || look.shape === "doublecircle") {
      a.cx = b.w / 2; a.cy = b.h / 2; a.r = Math.min(b.w, b.h) / 2; shape = el("circle", a);
    } else if (look.shape === "ellipse") {
      a.cx = b.w / 2; a.cy = b.h / 2; a.rx = b.w / 2; a.ry = b.h / 2; shape = el("ellipse", a);
    } else if (look.shape === "parallelogram") {
      a.points = [8, 0, b.w, 0, b.w - 8, b.h, 0, b.h].join(" "); shape = el("polygon", a);
    } else {
      a.width = b.w; a.height = b.h;
      if (look.style.indexOf("rounded") >= 0) a.rx = 6;
      shape = el("rect", a);
    }
    g.appendChild(shape);
    if (look.shape === "box3d") {
      g.appendChild(el("path", {d: "M0,0 l4,-4 h" + b.w + " v" + b.h + " l-4,4 M" + b.w + ",0 l4,-4",
                                fill: "none", stroke: stroke, "stroke-width": 0.9}));
    }
    var ls = lines(i);
    g.appendChild(el("text", {x: b.w / 2, y: ls.length > 1 ? 15 : b.h / 2 + 4, "text-anchor": "middle",
                              "font-size": 12, "font-family": "Times,serif"}, ls[0]));
    if (ls.length > 1 && ls[1]) {
      g.appendChild(el("text", {x: b.w / 2, y: 29, "text-anchor": "middle", "font-size": 10,
                                "font-family": "Times,serif", fill: "#404040"}, ls[1]));
    }
    var tip = el("title", {}, it.path || it.title);
    g.appendChild(tip);
    if (i === selected) g.classList.add("dn-sel");
    if (hits.has(i)) g.classList.add("dn-hit");
    return g;
  }
  /* An edge that leaves an open block from a node above its bottom, or enters one at a
     node below its top, runs along the block's right (leaving) or left (entering) margin,
     where no child is, instead of straight across the nodes in between. */
  function outermost(x, other) {
    var up = new Set(); for (var k = items[other].parent; k >= 0; k = items[k].parent) up.add(k);
    var found = -1; for (k = items[x].parent; k > 0 && !up.has(k); k = items[k].parent) found = k;
    return found;
  }
  function crossing(a, b, A, B, pts) {
    var S = outermost(a, b), C = outermost(b, a), sb = S > 0 ? boxes.get(S) : null,
        cb = C > 0 ? boxes.get(C) : null;
    if (sb && A.y + A.h < sb.y + sb.h - PAD - 4) {
      var ex = sb.x + sb.w - 4, ey = A.y + A.h + 8;
      pts.push([A.x + A.w / 2, ey], [ex, ey], [ex, sb.y + sb.h]);
    }
    if (cb && B.y > cb.y + LABEL_H + PAD + 4) {
      var mx = cb.x + 4, my = B.y - 8;
      pts.push([mx, cb.y], [mx, my], [B.x + B.w / 2, my]);
    }
  }
  function render() {
    var t = performance.now();
    var rep = reps(), root = layout(0), clusters = [], edgesG = el("g", {}), nodesG = el("g", {}),
        clusterG = el("g", {});
    boxes = new Map();
    (function placeKids(g, ox, oy) {
      var L = layout(g);
      items[g].children.forEach(function (c) {
        var p = L.pos.get(c), b = {x: ox + p.x, y: oy + p.y, w: p.w, h: p.h};
        boxes.set(c, b);
        if (open(c)) { clusters.push(c); placeKids(c, b.x, b.y); }
      });
    })(0, 0, 0);
    clusters.forEach(function (c) {
      var b = boxes.get(c), it = items[c];
      var st = status[c] || (it.changed ? "contains" : "");
      clusterG.appendChild(el("rect", {x: b.x, y: b.y, width: b.w, height: b.h, rx: 4, fill: "#f7f9fc",
        stroke: st ? "#ef6c00" : "#8c8c8c", "stroke-dasharray": "5 3", "stroke-width": st ? 1.6 : 0.8}));
      var lab = el("text", {x: b.x + 6, y: b.y + 13, "font-size": 11, "font-family": "Times,serif",
                            "class": "dn-cluster-label", "data-id": c}, "▾ " + it.title);
      clusterG.appendChild(lab);
    });
    var seen = new Set(), visible = 0;
    D.edges.forEach(function (e) {
      var a = rep[e[0]], b = rep[e[1]];
      if (a === b) return;
      var key = a + ">" + b;
      if (seen.has(key)) return;
      seen.add(key);
      var A = boxes.get(a), B = boxes.get(b);
      if (!A || !B) return;
      var pts = [[A.x + A.w / 2, A.y + A.h]], pa = items[a].parent;
      if (pa === items[b].parent) {
        var via = layout(pa).routes.get(key), o = pa === 0 ? {x: 0, y: 0} : boxes.get(pa);
        (via || []).forEach(function (q) { pts.push([o.x + q[0], o.y + q[1]]); });
      } else {
        crossing(a, b, A, B, pts);
      }
      pts.push([B.x + B.w / 2, B.y]);
      var d = "M" + pts[0][0].toFixed(1) + "," + pts[0][1].toFixed(1);
      for (var k = 1; k < pts.length; k++) {
        var p0 = pts[k - 1], p1 = pts[k], my = (p0[1] + p1[1]) / 2;
        d += "C" + p0[0].toFixed(1) + "," + my.toFixed(1) + " " + p1[0].toFixed(1) + "," + my.toFixed(1) +
             " " + p1[0].toFixed(1) + "," + p1[1].toFixed(1);
      }
      edgesG.appendChild(el("path", {d: d, fill: "none", stroke: "#333", "stroke-width": 0.9,
                                     "marker-end": "url(#dn-arrow)"}));
    });
    boxes.forEach(function (b, i) {
      if (open(i)) return;
      nodesG.appendChild(drawNode(i, b)); visible += 1;
    });
    var vp = $("viewport");
    while (vp.firstChild) vp.removeChild(vp.firstChild);
    vp.appendChild(clusterG); vp.appendChild(edgesG); vp.appendChild(nodesG);
    $("count").textContent = visible + " shown of " + D.nodeCount + " nodes";
    $("count").setAttribute("data-visible", visible);
    applyView();
    timings.render = performance.now() - t;
    return timings.render;
  }

  /* ---- pan and zoom ---- */
  function applyView() {
    $("viewport").setAttribute("transform", "translate(" + view.x + "," + view.y + ") scale(" + view.k + ")");
  }
  function fit() {
    var L = layout(0), c = $("canvas").getBoundingClientRect();
    view.k = Math.min(1.2, (c.width - 20) / L.w, (c.height - 20) / L.h);
    view.k = Math.max(view.k, 0.02);
    view.x = (c.width - L.w * view.k) / 2; view.y = 10; applyView();
  }
  function centerOn(i) {
    var b = boxes.get(i); if (!b) return;
    var c = $("canvas").getBoundingClientRect();
    if (view.k < 0.5) view.k = 0.8;
    view.x = c.width / 2 - (b.x + b.w / 2) * view.k; view.y = c.height / 2 - (b.y + b.h / 2) * view.k;
    applyView();
  }

  /* ---- expand, collapse, select ---- */
  function expand(i) {
    var t = performance.now();
    if (!isGroup(i) || expanded.has(i)) return 0;
    expanded.add(i);
    for (var k = i; items[k].children.length === 1 && isGroup(items[k].children[0]);) {
      k = items[k].children[0]; expanded.add(k);     // a block holding one block: open both at once
    }
    invalidate(i); render();
    return (timings.expand = performance.now() - t);
  }
  function collapse(i) {
    if (!i || !expanded.has(i)) return;
    items.forEach(function (it, k) { if (expanded.has(k) && within(k, i)) expanded.delete(k); });
    invalidate(i); render();
  }
  function within(k, g) { for (; k >= 0; k = items[k].parent) if (k === g) return true; return false; }
  function expandAll() {
    var t = performance.now();
    items.forEach(function (it, k) { if (it.t === "g") expanded.add(k); });
    cache.clear(); render(); fit();
    return (timings.expandAll = performance.now() - t);
  }
  function collapseAll() { expanded = new Set([0]); cache.clear(); render(); fit(); }
  function reveal(i) {
    for (var p = items[i].parent; p > 0; p = items[p].parent) if (!expanded.has(p)) { expanded.add(p); invalidate(p); }
    render(); select(i); centerOn(i);
  }
  function select(i) {
    selected = i;
    document.querySelectorAll(".dn-sel").forEach(function (e) { e.classList.remove("dn-sel"); });
    var n = document.querySelector('.dn-node[data-id="' + i + '"]');
    if (n) n.classList.add("dn-sel");
    details(i); crumbs(i);
  }
  function row(t, k, v, code) {
    var tr = h("tr"); tr.appendChild(h("td", k));
    var td = h("td"); if (code) td.appendChild(h("code", v)); else td.textContent = v;
    tr.appendChild(td); t.appendChild(tr);
  }
  function details(i) {
    var box = $("details"); box.textContent = "";
    if (i < 0) return;
    var it = items[i], t = h("table");
    box.appendChild(h("h2", isGroup(i) ? it.title : it.path));
    if (isGroup(i)) {
      row(t, "path", it.path || "(model)");
      row(t, "kind", it.kind === "repeat" ? (it.seq ? "seq" : "repeat × " + it.count)
        : it.kind === "range" ? "consecutive nodes (a long group shown in parts)" : it.kind);
      if (it.blockName) row(t, "block", it.blockName);
      row(t, "nodes", fmtInt(it.size));
    } else {
      row(t, "op", it.op); row(t, "title", it.title);
      if (it.block) row(t, "block", it.block);
      Object.keys(it.args).forEach(function (k) { row(t, k, it.args[k], true); });
      row(t, "dtype", it.dtype);
    }
    row(t, "output shape", it.shape || "unknown", true);
    if (it.shapeDims) row(t, "with --dim", it.shapeDims, true);
    row(t, "parameters", fmtInt(it.params));
    row(t, "MACs", it.macs === null ? "? (give --dim)" : fmtInt(it.macs));
    if (!isGroup(i)) { row(t, "source", it.loc, true); if (it.src) row(t, "line", it.src, true); }
    if (D.diff && D.diff.notes[i]) row(t, "diff", D.diff.notes[i]);
    box.appendChild(t);
  }
  function crumbs(i) {
    var c = $("crumbs"); c.textContent = "";
    var chain = []; for (var k = i; k >= 0; k = items[k].parent) chain.unshift(k);
    chain.forEach(function (k, n) {
      if (n) c.appendChild(document.createTextNode(" › "));
      var a = h("a", k === 0 ? D.name : items[k].label); a.setAttribute("data-id", k);
      a.onclick = function () { reveal(k); if (isGroup(k)) expand(k); };
      c.appendChild(a);
    });
  }

  /* ---- search ---- */
  function search(q) {
    q = (q || "").trim().toLowerCase(); hits = new Set();
    var res = $("results"); res.textContent = "";
    if (!q) { render(); return []; }
    var found = [];
    items.forEach(function (it, k) {
      if (k && (it.path.toLowerCase().indexOf(q) >= 0 || (it.op || "").toLowerCase() === q ||
                (it.op || "").toLowerCase().indexOf(q) >= 0)) found.push(k);
    });
    var rep = reps();
    found.forEach(function (k) { hits.add(rep[k]); });
    res.appendChild(h("p", found.length + " match" + (found.length === 1 ? "" : "es")));
    found.slice(0, 200).forEach(function (k) {
      var d = h("div", items[k].path + (items[k].op ? "  (" + items[k].op + ")" : ""));
      d.setAttribute("data-id", k); d.onclick = function () { reveal(k); };
      res.appendChild(d);
    });
    render();
    return found;
  }

  /* ---- export ---- */
  function renderCommand() {
    var depth = 0;
    expanded.forEach(function (g) { if (g && items[g].kind !== "range") depth = Math.max(depth, items[g].depth); });
    var q = function (s) { return /^[\w.\/:=+-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'"; };
    var cmd = ["dagnet", "render", q(D.file), "-o", q(D.name + ".svg")];
    if (depth) cmd.push("--depth", String(depth));
    Object.keys(D.dims || {}).forEach(function (k) { cmd.push("--dim", q(k + "=" + D.dims[k])); });
    return cmd.join(" ");
  }
  function exportSVG(download) {
    var L = layout(0), svg = $("graph").cloneNode(true);
    svg.setAttribute("xmlns", NS);
    svg.setAttribute("width", Math.ceil(L.w)); svg.setAttribute("height", Math.ceil(L.h));
    svg.setAttribute("viewBox", "-6 -6 " + Math.ceil(L.w + 12) + " " + Math.ceil(L.h + 12));
    svg.removeAttribute("style");
    svg.querySelector("#viewport").removeAttribute("transform");
    var text = new XMLSerializer().serializeToString(svg);
    if (download !== false) {
      var a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([text], {type: "image/svg+xml"}));
      a.download = D.name + ".svg"; document.body.appendChild(a); a.click(); a.remove();
    }
    return text;
  }

  /* ---- wiring ---- */
  function init() {
    document.title = D.name + " — dagnet view";
    $("title").textContent = D.name;
    var cv = $("canvas"), drag = null;
    cv.addEventListener("click", function (ev) {
      var t = ev.target.closest("[data-id]"); if (!t) return;
      var i = +t.getAttribute("data-id");
      if (t.classList.contains("dn-cluster-label")) { collapse(i); select(i); return; }
      select(i); if (isGroup(i)) expand(i);
    });
    cv.addEventListener("mouseover", function (ev) {
      var t = ev.target.closest(".dn-node"); if (t) details(+t.getAttribute("data-id"));
    });
    cv.addEventListener("mouseleave", function () { details(selected); });
    cv.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var r = cv.getBoundingClientRect(), f = Math.exp(-ev.deltaY * 0.0015), mx = ev.clientX - r.left,
          my = ev.clientY - r.top;
      view.x = mx - (mx - view.x) * f; view.y = my - (my - view.y) * f; view.k *= f; applyView();
    }, {passive: false});
    cv.addEventListener("mousedown", function (ev) { drag = [ev.clientX - view.x, ev.clientY - view.y]; });
    window.addEventListener("mousemove", function (ev) {
      if (drag) { view.x = ev.clientX - drag[0]; view.y = ev.clientY - drag[1]; applyView(); }
    });
    window.addEventListener("mouseup", function () { drag = null; });
    $("expand-all").onclick = expandAll;
    $("collapse-all").onclick = collapseAll;
    $("fit").onclick = fit;
    $("export").onclick = function () { exportSVG(true); };
    $("copy").onclick = function () {
      var c = renderCommand(), box = $("cmd"); box.value = c; box.style.display = ""; box.select();
      if (navigator.clipboard) navigator.clipboard.writeText(c).catch(function () {});
    };
    $("q").addEventListener("input", function () { search(this.value); });
    $("q").addEventListener("keydown", function (ev) {
      if (ev.key === "Enter") { var f = search(this.value); if (f.length) reveal(f[0]); }
    });
    if (D.modelSvg) {
      $("model-view").style.display = "";
      var img = document.createElement("img");
      img.src = "data:image/svg+xml;base64," + D.modelSvg; img.alt = "graphical model";
      $("model").appendChild(img);
      $("model-view").onclick = function () { document.body.classList.toggle("show-model"); };
    }
    var errs = $("errors");
    D.errors.forEach(function (e) {
      var d = h("div"); d.appendChild(h("b", e.file + ":" + e.line + ":" + e.col));
      d.appendChild(document.createTextNode(" error: " + e.message));
      if (e.source) { d.appendChild(h("br")); d.appendChild(h("code", e.source)); }
      if (e.hint) { d.appendChild(h("br")); d.appendChild(document.createTextNode("hint: " + e.hint)); }
      errs.appendChild(d);
    });
    if (D.errors.length) errs.insertBefore(h("h2", D.errors.length + " error" + (D.errors.length > 1 ? "s" : "")), errs.firstChild);
    if (D.diff) {
      var added = {};
      Object.keys(status).forEach(function (k) {
        for (var p = items[+k].parent; p >= 0; p = items[p].parent) items[p].changed = true;
      });
      items.forEach(function (it, k) {      // a group whose every node is new is new itself
        if (k && it.changed && it.t === "g") {
          var all = true;
          (function walk(g) { items[g].children.forEach(function (c) {
            if (isGroup(c)) walk(c); else if (status[c] !== "added") all = false; }); })(k);
          if (all) status[k] = "added";
        }
      });
      var ch = $("changes");
      ch.appendChild(h("h2", D.diff.equal ? "No differences" : D.diff.changes.length + " differences"));
      D.diff.changes.forEach(function (c) {
        var d = h("div", c.text, "dn-" + c.kind);
        if (c.id >= 0) { d.setAttribute("data-id", c.id); d.onclick = function () { reveal(c.id); }; }
        ch.appendChild(d);
      });
    }
    restore();
    render(); fit();
    timings.open = performance.now() - T0;
    if (D.serve) poll();
  }
  function restore() {
    if (!D.serve) return;
    try {
      var s = JSON.parse(sessionStorage.getItem("dagnet-view:" + D.file) || "null");
      if (!s) return;
      var byPath = new Map(); items.forEach(function (it, k) { if (it.t === "g") byPath.set(it.path, k); });
      s.forEach(function (p) { if (byPath.has(p)) expanded.add(byPath.get(p)); });
    } catch (e) { /* nothing saved */ }
  }
  function poll() {
    var version = D.version || null;        // the version this page was built from
    setInterval(function () {
      fetch("version", {cache: "no-store"}).then(function (r) { return r.text(); }).then(function (v) {
        if (version !== null && v !== version) {
          var paths = []; expanded.forEach(function (g) { if (g) paths.push(items[g].path); });
          sessionStorage.setItem("dagnet-view:" + D.file, JSON.stringify(paths));
          location.reload();
        }
        version = v;
      }).catch(function () {});
    }, 1000);
  }
  window.dagnetView = {expand: expand, collapse: collapse, expandAll: expandAll, collapseAll: collapseAll,
    search: search, select: select, reveal: reveal, exportSVG: exportSVG, renderCommand: renderCommand,
    timings: timings, items: items, byPath: function (p) {
      for (var k = 0; k < items.length; k++) if (items[k].path === p) return k; return -1;
    }};
  init();
})();
