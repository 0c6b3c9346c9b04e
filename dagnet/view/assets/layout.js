/* dagnetLayered: a layered (Sugiyama-style) layout of one block's children, top to bottom.

   Why not elkjs or dagre: the page lays out one block at a time, a few dozen to
   150 boxes (docs/view.md), where this is a few milliseconds; a library would add
   hundreds of kilobytes to every page for layouts of whole graphs it never does.

   W, H: box sizes; edges: [a, b] index pairs. An edge against index order (the
   children come in topological order of their first node, so only a cycle made by
   collapsing blocks gives one) is not ranked; it is drawn straight.
   Steps: ranks by longest path; a dummy vertex on every rank a long edge crosses;
   4 barycentre sweeps to order each rank; x by 3 sweeps towards the mean of the
   neighbours, kept apart by gapX (the mean of a left-packed and a right-packed
   placement, which both keep every gap). Returns the boxes' top-left corners,
   the dummy points of every long edge, and the size. */
function dagnetLayered(W, H, edges, o) {
  "use strict";
  var n = W.length, up = [], down = [], rank = [], fwd = [], k, v, li, it;
  W = W.slice(); H = H.slice();
  for (k = 0; k < n; k++) { up.push([]); down.push([]); }
  edges.forEach(function (e) { if (e[0] < e[1]) fwd.push(e); });
  fwd.forEach(function (e) { up[e[1]].push(e[0]); });
  for (k = 0; k < n; k++) {
    var r = 0; up[k].forEach(function (p) { r = Math.max(r, rank[p] + 1); }); rank.push(r);
  }
  for (k = 0; k < n; k++) up[k] = [];
  var V = n, long = [];
  fwd.forEach(function (e) {
    var a = e[0], b = e[1], prev = a, via = [];
    for (var r = rank[a] + 1; r < rank[b]; r++) {
      var d = V++; rank.push(r); W.push(o.dummyW); H.push(0); up.push([prev]); down.push([]);
      down[prev].push(d); via.push(d); prev = d;
    }
    up[b].push(prev); down[prev].push(b);
    long.push({a: a, b: b, via: via});
  });
  var layers = [];
  for (v = 0; v < V; v++) (layers[rank[v]] = layers[rank[v]] || []).push(v);
  for (li = 0; li < layers.length; li++) layers[li] = layers[li] || [];
  var ord = new Array(V);
  layers.forEach(function (L) { L.forEach(function (v, i) { ord[v] = i; }); });
  function mean(s, val, self) {
    if (!s.length) return self;
    var t = 0; s.forEach(function (u) { t += val[u]; }); return t / s.length;
  }
  function sweep(L, nb) {
    var key = L.map(function (v) { return mean(nb[v], ord, ord[v]); });
    var idx = L.map(function (v, i) { return i; });
    idx.sort(function (a, b) { return key[a] - key[b] || a - b; });
    var out = idx.map(function (i) { return L[i]; });
    out.forEach(function (v, i) { ord[v] = i; });
    return out;
  }
  for (it = 0; it < 4; it++) {
    for (li = 1; li < layers.length; li++) layers[li] = sweep(layers[li], up);
    for (li = layers.length - 2; li >= 0; li--) layers[li] = sweep(layers[li], down);
  }
  var X = new Array(V);
  layers.forEach(function (L) {
    var x = 0; L.forEach(function (v) { X[v] = x + W[v] / 2; x += W[v] + o.gapX; });
  });
  function place(L, nb) {
    var want = L.map(function (v) { return mean(nb[v], X, X[v]); });
    var m = L.length, lo = new Array(m), hi = new Array(m), i;
    for (i = 0; i < m; i++) {
      lo[i] = i ? Math.max(want[i], lo[i - 1] + (W[L[i - 1]] + W[L[i]]) / 2 + o.gapX) : want[i];
    }
    for (i = m - 1; i >= 0; i--) {
      hi[i] = i < m - 1 ? Math.min(want[i], hi[i + 1] - (W[L[i + 1]] + W[L[i]]) / 2 - o.gapX) : want[i];
    }
    for (i = 0; i < m; i++) X[L[i]] = (lo[i] + hi[i]) / 2;
  }
  for (it = 0; it < 3; it++) {
    for (li = 1; li < layers.length; li++) place(layers[li], up);
    for (li = layers.length - 2; li >= 0; li--) place(layers[li], down);
  }
  var minX = Infinity, maxX = -Infinity;
  for (v = 0; v < V; v++) { minX = Math.min(minX, X[v] - W[v] / 2); maxX = Math.max(maxX, X[v] + W[v] / 2); }
  if (!V) { minX = 0; maxX = 80; }
  var Y = new Array(V), y = o.top;
  layers.forEach(function (L) {
    var lh = 0; L.forEach(function (v) { lh = Math.max(lh, H[v]); });
    L.forEach(function (v) { Y[v] = y + (lh - H[v]) / 2; });
    y += (lh || 4) + o.gapY;
  });
  var shift = o.pad - minX, xs = [], ys = [];
  for (k = 0; k < n; k++) { xs.push(X[k] - W[k] / 2 + shift); ys.push(Y[k]); }
  return {
    x: xs, y: ys, w: maxX - minX + 2 * o.pad, h: y - o.gapY + o.pad,
    routes: long.map(function (e) {
      return {a: e.a, b: e.b, via: e.via.map(function (d) { return [X[d] + shift, Y[d]]; })};
    })
  };
}
