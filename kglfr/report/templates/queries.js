// The query list: filter, sort, page by 200 rows, and a query's top-10 on click. Plain JavaScript, no library.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("page-data").textContent);
  var S = D.sheets, PAGE = 200;
  var state = { proto: 0, rows: [], shown: PAGE, col: 4, dir: 1 };
  var body = document.querySelector("#q-table tbody");
  var search = document.getElementById("q-search");

  function thumb(t, cls) {
    var d = document.createElement("div"), k = t % S.per_sheet;
    d.className = "thumb " + (cls || "");
    d.style.width = S.width + "px";
    d.style.height = S.height + "px";
    d.style.backgroundImage = 'url("' + D.files + "/" + S.files[Math.floor(t / S.per_sheet)] + '")';
    d.style.backgroundPosition = -(k % S.columns) * S.width + "px " + -Math.floor(k / S.columns) * S.height + "px";
    return d;
  }

  function matches(r, words) {
    for (var i = 0; i < words.length; i++) {
      var w = words[i], m = /^(id|cam):(\d+)$/.exec(w);
      if (m) { if (r[m[1] === "id" ? 2 : 3] !== Number(m[2])) return false; }
      else if ((r[1] + " " + r[2]).toLowerCase().indexOf(w) < 0) return false;
    }
    return true;
  }

  function compare(a, b) {
    var x = a[state.col], y = b[state.col];
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * state.dir;
  }

  function refresh() {
    var words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    state.rows = D.protocols[state.proto].rows.filter(function (r) { return matches(r, words); }).sort(compare);
    state.shown = PAGE;
    draw();
  }

  function draw() {
    var frag = document.createDocumentFragment();
    state.rows.slice(0, state.shown).forEach(function (r) {
      var tr = document.createElement("tr"), td = document.createElement("td");
      td.appendChild(thumb(r[0], "q"));
      tr.appendChild(td);
      [r[1], r[2], r[3], r[4] === null ? "no match" : r[4].toFixed(2), r[5] || "–"].forEach(function (v) {
        var c = document.createElement("td");
        c.textContent = v;
        tr.appendChild(c);
      });
      tr.addEventListener("click", function () { show(r, tr); });
      frag.appendChild(tr);
    });
    body.textContent = "";
    body.appendChild(frag);
    var n = D.protocols[state.proto].rows.length;
    document.getElementById("q-count").textContent = state.rows.length + " of " + n + " queries";
    document.getElementById("q-more").hidden = state.shown >= state.rows.length;
  }

  function cell(node, text) {
    var c = document.createElement("div");
    c.className = "cell";
    c.appendChild(node);
    c.appendChild(document.createElement("br"));
    c.appendChild(document.createTextNode(text));
    return c;
  }

  function show(r, tr) {
    var prev = body.querySelector("tr.sel");
    if (prev) prev.classList.remove("sel");
    tr.classList.add("sel");
    var box = document.getElementById("q-detail");
    box.textContent = "";
    var title = document.createElement("p");
    title.className = "note";
    title.textContent = r[1] + " (identity " + r[2] + ", cam " + r[3] + ", AP " +
      (r[4] === null ? "–" : r[4].toFixed(2)) + "%): its top " + r[6].length;
    box.appendChild(title);
    box.appendChild(cell(thumb(r[0], "q"), "query"));
    r[6].forEach(function (t, j) {
      box.appendChild(cell(thumb(t, r[7][j] === "1" ? "ok" : "bad"), (j + 1) + " · " + r[8][j].toFixed(2)));
    });
  }

  document.querySelectorAll("#q-table th[data-col]").forEach(function (th) {
    th.addEventListener("click", function () {
      var col = Number(th.dataset.col);
      state.dir = state.col === col ? -state.dir : 1;
      state.col = col;
      document.querySelectorAll("#q-table th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(state.dir > 0 ? "asc" : "desc");
      refresh();
    });
  });
  search.addEventListener("input", refresh);
  document.getElementById("q-protocol").addEventListener("change", function (e) {
    state.proto = Number(e.target.value);
    refresh();
  });
  document.getElementById("q-more").addEventListener("click", function () { state.shown += PAGE; draw(); });
  refresh();
  document.body.dataset.queriesReady = "1";
})();
