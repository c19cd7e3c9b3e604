// The live dashboard: polls /stats twice a second and derives rates from the difference between two
// snapshots (tok/s, disk MB/s, recent cache hit rate), so it moves while a request runs.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var prev = null;
  var series = [];
  var polls = 0;
  var POLL_MS = 500;

  function apiKey() { return localStorage.getItem("expertsniper-api-key") || ""; }
  function headers() { return apiKey() ? { Authorization: "Bearer " + apiKey() } : {}; }

  function bytes(n) {
    if (n >= 1 << 30) { return (n / (1 << 30)).toFixed(2) + " GiB"; }
    if (n >= 1 << 20) { return (n / (1 << 20)).toFixed(1) + " MiB"; }
    if (n >= 1 << 10) { return (n / (1 << 10)).toFixed(1) + " KiB"; }
    return n + " B";
  }
  function pct(a, b) { return b > 0 ? (100 * a / b).toFixed(1) + "%" : "–"; }

  function update(s) {
    polls++;
    document.body.setAttribute("data-polls", String(polls));
    $("model").textContent = s.model + " · " + s.mode + " mode";
    $("status").textContent = "up " + Math.round(s.uptime_s) + " s · " + s.requests + " requests";
    var genRate = 0, promptRate = 0, diskRate = 0, recentHit = null;
    if (prev) {
      var dt = (s.time_ms - prev.time_ms) / 1000;
      if (dt > 0) {
        genRate = (s.generated_tokens - prev.generated_tokens) / dt;
        promptRate = (s.prompt_tokens - prev.prompt_tokens) / dt;
        diskRate = (s.bytes_read - prev.bytes_read) / dt / 1e6;
        var dh = s.cache_hits - prev.cache_hits, dm = s.cache_misses - prev.cache_misses;
        if (dh + dm > 0) { recentHit = pct(dh, dh + dm); }
      }
    }
    prev = s;
    series.push(genRate);
    if (series.length > 240) { series.shift(); }
    $("toks").textContent = genRate.toFixed(1);
    $("toks-sub").textContent = "tok/s · " + s.generated_tokens + " generated in all";
    $("ptoks").textContent = promptRate.toFixed(1);
    $("rss").textContent = bytes(s.rss_bytes);
    $("disk").textContent = diskRate.toFixed(1);
    $("disk-sub").textContent = "MB/s · " + bytes(s.bytes_read) + " in " + s.reads + " reads";
    // Stream mode (dense models) caches whole layers' FFNs and reads the next layer ahead.
    var dense = s.mode === "stream";
    $("hit-label").textContent = dense ? "layers from the cache" : "expert cache hit rate";
    $("cache-label").textContent = dense ? "layer (FFN) cache" : "expert cache";
    $("hit").textContent = recentHit || pct(s.cache_hits, s.cache_hits + s.cache_misses);
    $("hit-sub").textContent = (recentHit ? "last 0.5 s · " : "") + "overall " + pct(s.cache_hits, s.cache_hits + s.cache_misses) +
      (dense ? " · read ahead " + pct(s.read_ahead || 0, s.cache_hits + s.cache_misses) : "");
    $("cache").textContent = bytes(s.cache_bytes);
    $("cache-sub").textContent = "of " + bytes(s.cache_budget) + " budget";
    $("lat").textContent = (s.read_p50_us / 1000).toFixed(2) + " ms";
    $("lat-sub").textContent = "p50 · p99 " + (s.read_p99_us / 1000).toFixed(2) + " ms";
    $("slots").textContent = s.slots_busy + " / " + s.slots;
    $("slots-sub").textContent = "busy · " + s.queue + " queued" +
      s.running.map(function (r) { return " · slot " + r.id + ": " + r.decoded + " tok"; }).join("");
    drawDevices(s.devices || []);
    drawSpark();
    drawHeatmap(s.layer_expert_activations);
  }

  // A model spread over RPC workers: where its layers are (one line per device, the local one first).
  function drawDevices(devs) {
    var card = $("devices-card");
    if (!devs.length) { card.classList.add("hidden"); return; }
    card.classList.remove("hidden");
    var list = $("devices");
    list.textContent = "";
    devs.forEach(function (d) {
      var li = document.createElement("li");
      li.textContent = d.name + (d.endpoint ? " on " + d.endpoint : "") + ": " + d.layers + " layers · " +
        bytes(d.free_bytes) + " free of " + bytes(d.total_bytes);
      list.appendChild(li);
    });
  }

  function drawSpark() {
    var c = $("spark"), g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    var max = Math.max.apply(null, series.concat([1]));
    g.strokeStyle = "#4ea1ff";
    g.lineWidth = 2;
    g.beginPath();
    series.forEach(function (v, i) {
      var x = c.width * i / 239, y = c.height - 4 - (c.height - 8) * v / max;
      if (i === 0) { g.moveTo(x, y); } else { g.lineTo(x, y); }
    });
    g.stroke();
    g.fillStyle = "#8b949e";
    g.font = "12px sans-serif";
    g.fillText("max " + max.toFixed(1) + " tok/s", 6, 14);
  }

  // Each layer is normalised on its own (log scale): the question is which experts of a layer are
  // hot, and layers differ in total only by how many tokens were routed.
  function drawHeatmap(act) {
    var c = $("heatmap"), g = c.getContext("2d");
    g.fillStyle = "#0b0f14";
    g.fillRect(0, 0, c.width, c.height);
    if (!act || !act.length) { $("heat-sub").textContent = "no expert statistics (dense model or RAM mode)"; return; }
    var layers = act.length, experts = act[0].length || 1;
    var cw = c.width / experts, ch = c.height / layers;
    var total = 0;
    act.forEach(function (row, l) {
      var max = Math.max.apply(null, row.concat([1]));
      row.forEach(function (v, e) {
        total += v;
        if (!v) { return; }
        var t = Math.log(1 + v) / Math.log(1 + max);
        var r = Math.round(255 * Math.min(1, t * 1.6)), gr = Math.round(255 * Math.max(0, t * 1.6 - 0.6)), b = Math.round(80 * (1 - t));
        g.fillStyle = "rgb(" + r + "," + gr + "," + b + ")";
        g.fillRect(e * cw, l * ch, Math.max(1, cw - (cw > 3 ? 1 : 0)), Math.max(1, ch - (ch > 3 ? 1 : 0)));
      });
    });
    $("heat-sub").textContent = layers + " layers × " + experts + " experts · " + total + " routings counted";
  }

  function poll() {
    fetch("/stats", { headers: headers(), cache: "no-store" }).then(function (r) {
      if (r.status === 401) { $("keybar").classList.remove("hidden"); $("model").textContent = "API key required"; return null; }
      if (r.status === 503) { $("model").textContent = "loading model…"; return null; }
      return r.json();
    }).then(function (s) { if (s) { update(s); } })
      .catch(function () { $("status").textContent = "server unreachable"; })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  $("savekey").addEventListener("click", function () {
    localStorage.setItem("expertsniper-api-key", $("apikey").value);
    $("keybar").classList.add("hidden");
  });
  poll();
})();
