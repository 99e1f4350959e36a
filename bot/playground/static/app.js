// The playground's page: renders the chats from the server's state (server-sent events)
// and sends what people do (type, attach, press a button, move the clock) as POSTs.
"use strict";
(function () {
  const T = JSON.parse(document.getElementById("strings").textContent);
  const fill = (s, args) => s.replace(/\{(\w+)\}/g, (m, k) => (k in args ? String(args[k]) : m));
  const chats = document.getElementById("chats");
  const statusLine = document.getElementById("status");
  const panes = new Map();   // key -> {el, log, sig, alertsSeen}
  let first = true;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  async function post(url, body, form) {
    statusLine.textContent = "";
    try {
      const res = await fetch(url, form ? {method: "POST", headers: {"X-Playground": "1"}, body: form}
        : {method: "POST", headers: {"Content-Type": "application/json", "X-Playground": "1"},
           body: JSON.stringify(body)});
      const data = await res.json();
      if (!data.ok) statusLine.textContent = fill(T.pg_failed, {error: data.error || res.status});
      return data;
    } catch (e) {
      statusLine.textContent = fill(T.pg_failed, {error: String(e)});
      return {ok: false};
    }
  }

  function kindLabel(kind) { return T["pg_kind_" + kind] || kind; }

  function makePane(p) {
    const id = "pane-" + p.key;
    const log = el("div", {class: "log", role: "log", "aria-live": "polite", "aria-label": fill(T.pg_chat_of, {title: p.title}), tabindex: "0"});
    const alerts = el("div", {class: "alerts"});
    const who = el("select", {name: "user", "aria-label": T.pg_sending_as});
    const text = el("input", {type: "text", name: "text", id: id + "-text", autocomplete: "off", maxlength: "4096"});
    const file = el("input", {type: "file", name: "file", id: id + "-file"});
    const form = el("form", {class: "compose", "data-pane": p.key},
      el("label", {class: "as", for: id + "-who"}, T.pg_sending_as + " ", who),
      el("label", {class: "vh", for: id + "-text", text: T.pg_message}), text,
      el("label", {class: "attach", title: T.pg_attach}, file, el("span", {"aria-hidden": "true", text: "📎"}),
        el("span", {class: "vh", text: T.pg_attach})),
      el("button", {type: "submit", text: T.pg_send}));
    who.id = id + "-who";
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const value = text.value;
      if (!value.trim()) return;
      text.value = "";
      const r = await post("/api/send", {pane: p.key, text: value, user: who.value || null});
      if (!r.ok) text.value = value;
      text.focus();
    });
    file.addEventListener("change", async () => {
      if (!file.files.length) return;
      const fd = new FormData();
      fd.append("pane", p.key);
      fd.append("user", who.value || "");
      fd.append("caption", text.value);
      fd.append("file", file.files[0]);
      text.value = "";
      await post("/api/upload", null, fd);
      file.value = "";
    });
    const initial = (p.title || "?").trim().slice(0, 1);
    const section = el("section", {class: "pane k-" + p.kind, id, "data-pane": p.key, "aria-labelledby": id + "-title"},
      el("header", {}, el("span", {class: "avatar", "aria-hidden": "true", text: initial}),
        el("div", {}, el("h3", {id: id + "-title", text: p.title}), el("p", {text: kindLabel(p.kind)}))),
      log, alerts, form);
    const entry = {el: section, log, alerts, who, sig: "", alertsSeen: -1};
    panes.set(p.key, entry);
    return entry;
  }

  function renderMessage(p, m) {
    const mine = !m.from_bot;
    const bubble = el("div", {class: "msg" + (mine ? " me" : "") + (m.protected ? " protected" : ""),
                              "data-message": m.id});
    if (p.kind === "group" || m.from_bot) {
      bubble.append(el("div", {class: "who", text: m.from_bot ? T.pg_bot : m.sender}));
    }
    if (m.reply_to) bubble.append(el("div", {class: "quote", text: m.reply_to}));
    if (m.photo) {
      const img = el("img", {src: "/file/" + encodeURIComponent(m.photo), alt: m.html ? "" : T.pg_no_preview,
                             draggable: m.protected ? "false" : null});
      img.addEventListener("load", () => {  // keep the chat at its end when a picture arrives
        const log = img.closest(".log");
        if (log && log.scrollHeight - log.scrollTop - log.clientHeight < img.height + 60) log.scrollTop = log.scrollHeight;
      });
      bubble.append(img);
    }
    if (m.file) {
      const link = m.file.id ? el("a", {href: "/file/" + encodeURIComponent(m.file.id), target: "_blank",
                                        rel: "noopener", text: m.file.name}) : el("span", {text: m.file.name});
      bubble.append(el("div", {class: "file"}, el("span", {class: "icon", "aria-hidden": "true", text: "📄"}), link));
    }
    if (m.html) {
      const body = el("div", {class: "body"});
      body.innerHTML = m.html;  // escaped and built by the server from the message's entities
      bubble.append(body);
    }
    const meta = el("div", {class: "meta"});
    if (m.protected) meta.append(el("span", {class: "lock", title: T.pg_protected, text: "🔒 " + T.pg_protected + " · "}));
    if (m.edited) meta.append(el("span", {text: T.pg_edited + " · "}));
    meta.append(el("time", {text: m.time}));
    bubble.append(meta);
    if (!m.buttons.length) return bubble;
    const kb = el("div", {class: "kb", role: "group"});
    for (const row of m.buttons) {
      const r = el("div", {class: "row"});
      for (const b of row) {
        if (b.url) r.append(el("a", {href: b.url, target: "_blank", rel: "noopener", text: b.text}));
        else r.append(el("button", {type: "button", text: b.text, "data-data": b.data, onclick: () =>
          post("/api/press", {pane: p.key, message: m.id, data: b.data, user: panes.get(p.key).who.value || null})}));
      }
      kb.append(r);
    }
    return el("div", {class: "msgwrap"}, bubble, kb);
  }

  function renderAlerts(entry, p) {
    for (const a of p.alerts) {
      if (a.seq <= entry.alertsSeen) continue;
      entry.alertsSeen = a.seq;
      if (first) continue;
      if (a.show_alert) {
        const ok = el("button", {type: "button", text: T.pg_ok});
        const box = el("div", {class: "alert", role: "alertdialog", "aria-label": T.pg_alert, "data-alert": a.seq},
          el("p", {text: a.text}), ok);
        ok.addEventListener("click", () => box.remove());
        entry.alerts.append(box);
        ok.focus({preventScroll: true});
      } else {
        const toast = el("div", {class: "toast", role: "status", "data-alert": a.seq, text: a.text});
        entry.alerts.append(toast);
        setTimeout(() => toast.remove(), 4000);
      }
    }
  }

  function render(state) {
    document.getElementById("clock-now").textContent = state.now;
    document.getElementById("clock-ahead").textContent =
      state.offset_minutes ? fill(T.pg_clock_ahead, {minutes: state.offset_minutes}) : "";
    document.getElementById("add-team").disabled = !state.can_add_team;
    state.panes.forEach((p, i) => {
      const entry = panes.get(p.key) || makePane(p);
      if (chats.children[i] !== entry.el) chats.insertBefore(entry.el, chats.children[i] || null);
      const names = p.members.map((u) => u.id + ":" + u.name).join(",");
      if (entry.who.dataset.sig !== names) {
        entry.who.replaceChildren(...p.members.map((u) => el("option", {value: u.id, text: u.name})));
        entry.who.dataset.sig = names;
        entry.who.closest("label").hidden = p.members.length < 2 && p.kind !== "group";
      }
      const sig = JSON.stringify(p.messages);
      if (sig !== entry.sig) {
        entry.sig = sig;
        const atBottom = entry.log.scrollHeight - entry.log.scrollTop - entry.log.clientHeight < 40;
        entry.log.replaceChildren(...(p.messages.length ? p.messages.map((m) => renderMessage(p, m))
          : [el("p", {class: "empty", text: T.pg_empty})]));
        if (atBottom || first) entry.log.scrollTop = entry.log.scrollHeight;
      }
      renderAlerts(entry, p);
    });
    first = false;
  }

  document.querySelectorAll("[data-jump]").forEach((b) =>
    b.addEventListener("click", () => post("/api/clock", {jump: b.dataset.jump})));
  document.getElementById("add-citizen").addEventListener("click", () => post("/api/add", {what: "citizen"}));
  document.getElementById("add-team").addEventListener("click", () => post("/api/add", {what: "team"}));
  document.addEventListener("contextmenu", (ev) => { if (ev.target.closest(".protected")) ev.preventDefault(); });
  document.addEventListener("copy", (ev) => { if (getSelection().anchorNode && getSelection().anchorNode.parentElement
    && getSelection().anchorNode.parentElement.closest(".protected")) ev.preventDefault(); });

  function connect() {
    const source = new EventSource("/api/events");
    source.onmessage = (ev) => { statusLine.textContent = ""; render(JSON.parse(ev.data)); };
    source.onerror = () => { statusLine.textContent = T.pg_disconnected; };
  }
  connect();
})();
