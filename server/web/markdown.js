// A small, safe markdown renderer for model output. Everything is HTML-escaped before any markup is
// added, so model text can never inject tags or attributes; links are kept only for http(s) URLs.
// Supports: fenced code blocks (also an unclosed one while streaming), headings, lists, block quotes,
// horizontal rules, paragraphs, inline code, bold, italic and links.
(function (root) {
  "use strict";

  function escapeHTML(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  // inline renders one escaped line's inline markup. Code spans are cut out first so that nothing
  // inside them is interpreted.
  function inline(text) {
    var parts = text.split(/(`[^`\n]+`)/);
    return parts.map(function (part, i) {
      if (i % 2 === 1) {
        return "<code>" + escapeHTML(part.slice(1, -1)) + "</code>";
      }
      var s = escapeHTML(part);
      s = s.replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, function (_, label, url) {
        return '<a href="' + url + '" rel="noopener noreferrer" target="_blank">' + label + "</a>";
      });
      s = s.replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");
      s = s.replace(/__([^_]+)__/g, "<strong>$1</strong>");
      s = s.replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>");
      s = s.replace(/(^|[^\w])_([^_\s][^_]*)_(?=[^\w]|$)/g, "$1<em>$2</em>");
      return s;
    }).join("");
  }

  function renderBlocks(src) {
    var lines = src.split("\n");
    var out = [];
    var para = [];
    var list = null; // {tag, items}
    var quote = [];

    function flushPara() {
      if (para.length) { out.push("<p>" + para.map(inline).join("<br>") + "</p>"); para = []; }
    }
    function flushList() {
      if (list) {
        out.push("<" + list.tag + ">" + list.items.map(function (it) { return "<li>" + inline(it) + "</li>"; }).join("") + "</" + list.tag + ">");
        list = null;
      }
    }
    function flushQuote() {
      if (quote.length) { out.push("<blockquote>" + renderBlocks(quote.join("\n")) + "</blockquote>"); quote = []; }
    }
    function flushAll() { flushPara(); flushList(); flushQuote(); }

    lines.forEach(function (line) {
      var m;
      if (/^\s*>/.test(line)) { flushPara(); flushList(); quote.push(line.replace(/^\s*>\s?/, "")); return; }
      flushQuote();
      if (/^\s*$/.test(line)) { flushPara(); flushList(); return; }
      if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
        flushAll();
        out.push("<h" + m[1].length + ">" + inline(m[2]) + "</h" + m[1].length + ">");
        return;
      }
      if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) { flushAll(); out.push("<hr>"); return; }
      if ((m = /^\s*[-*+]\s+(.*)$/.exec(line))) {
        flushPara();
        if (!list || list.tag !== "ul") { flushList(); list = { tag: "ul", items: [] }; }
        list.items.push(m[1]);
        return;
      }
      if ((m = /^\s*\d+[.)]\s+(.*)$/.exec(line))) {
        flushPara();
        if (!list || list.tag !== "ol") { flushList(); list = { tag: "ol", items: [] }; }
        list.items.push(m[1]);
        return;
      }
      flushList();
      para.push(line);
    });
    flushAll();
    return out.join("\n");
  }

  function renderMarkdown(src) {
    var out = [];
    var re = /```([^\n`]*)\n?([\s\S]*?)(```|$)/g;
    var last = 0;
    var m;
    while ((m = re.exec(src)) !== null) {
      if (m.index === re.lastIndex) { re.lastIndex++; } // never loop on an empty match
      out.push(renderBlocks(src.slice(last, m.index)));
      var lang = m[1].trim().replace(/[^\w+-]/g, "");
      out.push("<pre><code" + (lang ? ' class="lang-' + lang + '"' : "") + ">" + escapeHTML(m[2].replace(/\n$/, "")) + "</code></pre>");
      last = re.lastIndex;
      if (m[3] === "") { break; }
    }
    out.push(renderBlocks(src.slice(last)));
    return out.join("\n");
  }

  root.renderMarkdown = renderMarkdown;
  root.escapeHTML = escapeHTML;
  if (typeof module !== "undefined" && module.exports) {
    module.exports = { renderMarkdown: renderMarkdown, escapeHTML: escapeHTML };
  }
})(typeof window !== "undefined" ? window : globalThis);
