// The web chat: streams /v1/chat/completions with server-sent events, renders markdown safely,
// stops on demand, and shows each answer's statistics. ?q=TEXT sends TEXT on load.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var history = [];
  var controller = null;

  function apiKey() { return localStorage.getItem("expertsniper-api-key") || ""; }
  function headers() {
    var h = { "Content-Type": "application/json" };
    if (apiKey()) { h["Authorization"] = "Bearer " + apiKey(); }
    return h;
  }
  function needKey() { $("keybar").classList.remove("hidden"); $("apikey").focus(); }

  function loadModel() {
    fetch("/v1/models", { headers: headers() }).then(function (r) {
      if (r.status === 401) { needKey(); $("model").textContent = "API key required"; return null; }
      if (r.status === 503) { $("model").textContent = "loading model…"; setTimeout(loadModel, 1000); return null; }
      return r.json();
    }).then(function (v) {
      if (v && v.data && v.data[0]) { $("model").textContent = v.data[0].id; }
    }).catch(function () { $("model").textContent = "server unreachable"; setTimeout(loadModel, 2000); });
  }

  function bubble(role) {
    var div = document.createElement("div");
    div.className = "msg " + role;
    var body = document.createElement("div");
    body.className = "body";
    div.appendChild(body);
    var stats = document.createElement("div");
    stats.className = "stats";
    div.appendChild(stats);
    $("messages").appendChild(div);
    return div;
  }

  function scroll() { var m = $("messages"); m.scrollTop = m.scrollHeight; }

  function fmt(n, d) { return (n || 0).toFixed(d); }

  function showStats(el, t, stopped, wall, pieces) {
    if (!t) {
      el.textContent = stopped ? "stopped · " + pieces + " tokens received · " + fmt(wall / 1000, 2) + " s" : "";
      return;
    }
    var parts = [
      t.predicted_n + " tokens",
      fmt(t.predicted_per_second, 1) + " tok/s",
      "prompt " + t.prompt_n + (t.cache_n ? " (+" + t.cache_n + " cached)" : "") + " @ " + fmt(t.prompt_per_second, 1) + " tok/s",
      fmt(wall / 1000, 2) + " s",
    ];
    if (stopped) { parts.unshift("stopped"); }
    el.textContent = parts.join(" · ");
  }

  function setBusy(busy) {
    $("send").disabled = busy;
    $("stop").disabled = !busy;
    document.body.classList.toggle("busy", busy);
  }

  function send(text) {
    if (!text.trim() || controller) { return; }
    // A turn joins the history only with its answer: a failed one is dropped (the next question
    // must not carry a question the model never answered), and so is one stopped before any text.
    var turnStart = history.length;
    history.push({ role: "user", content: text });
    var u = bubble("user");
    u.querySelector(".body").textContent = text;
    var a = bubble("assistant");
    var body = a.querySelector(".body");
    var stats = a.querySelector(".stats");
    body.innerHTML = '<span class="cursor"></span>';
    scroll();

    var answer = "";
    var pieces = 0;
    var timings = null;
    var started = performance.now();
    var pending = false;
    function render() {
      pending = false;
      body.innerHTML = window.renderMarkdown(answer) + (controller ? '<span class="cursor"></span>' : "");
      scroll();
    }
    function schedule() { if (!pending) { pending = true; requestAnimationFrame(render); } }

    controller = new AbortController();
    setBusy(true);
    var req = {
      messages: history.slice(),
      stream: true,
      stream_options: { include_usage: true },
      temperature: parseFloat($("temperature").value),
      max_tokens: parseInt($("maxtokens").value, 10),
    };
    fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(req), signal: controller.signal })
      .then(function (resp) {
        if (!resp.ok) {
          if (resp.status === 401) { needKey(); }
          return resp.json().then(function (e) { throw new Error(e.error ? e.error.message : resp.statusText); });
        }
        var reader = resp.body.getReader();
        var decoder = new TextDecoder();
        var buf = "";
        function pump() {
          return reader.read().then(function (r) {
            if (r.done) { return; }
            buf += decoder.decode(r.value, { stream: true });
            var events = buf.split("\n\n");
            buf = events.pop();
            events.forEach(function (ev) {
              var data = ev.replace(/^data: /, "");
              if (data === "[DONE]") { return; }
              var chunk = JSON.parse(data);
              if (chunk.error) { throw new Error(chunk.error.message); }
              var c = chunk.choices && chunk.choices[0];
              if (c && c.delta && typeof c.delta.content === "string") { answer += c.delta.content; pieces++; schedule(); }
              if (chunk.timings) { timings = chunk.timings; }
            });
            return pump();
          });
        }
        return pump();
      })
      .then(function () {
        history.push({ role: "assistant", content: answer });
        finish(false);
      })
      .catch(function (err) {
        if (err.name === "AbortError") {
          if (answer) { history.push({ role: "assistant", content: answer }); } else { history.length = turnStart; }
          finish(true);
          return;
        }
        history.length = turnStart;
        finish(false);
        var e = document.createElement("div");
        e.className = "error";
        e.textContent = "error: " + err.message;
        a.appendChild(e);
      });

    function finish(stopped) {
      controller = null;
      setBusy(false);
      render();
      showStats(stats, timings, stopped, performance.now() - started, pieces);
      a.classList.add("done");
      $("input").focus();
    }
  }

  $("composer").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = $("input").value;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", function () { if (controller) { controller.abort(); } });
  $("clear").addEventListener("click", function () { if (!controller) { history = []; $("messages").innerHTML = ""; } });
  $("savekey").addEventListener("click", function () {
    localStorage.setItem("expertsniper-api-key", $("apikey").value);
    $("keybar").classList.add("hidden");
    loadModel();
  });

  loadModel();
  var q = new URLSearchParams(location.search).get("q");
  if (q) { send(q); }
})();
