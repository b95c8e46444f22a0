"""A chat page for the demo: talk to the bot through the emulator, in a browser, with no token.

GET /_emulator/chat[?bot=<id>&user=<id>] serves one HTML page (our own few lines of script, no
library). What you type is injected as a private message from a demo user; the page polls
`sent` and shows the bot's messages with their inline keyboards; pressing a button injects the
callback query; an edit rewrites the message in place. It belongs to the emulator (a test
double), not to the product.
"""

from __future__ import annotations

from html import escape

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>botstack demo chat (emulator)</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #e7ebf0; }
  header { background: #517da2; color: white; padding: .6rem 1rem; }
  header small { opacity: .8; }
  #log { max-width: 640px; margin: 0 auto; padding: 1rem; display: flex; flex-direction: column; gap: .4rem;
         min-height: 60vh; }
  .msg { max-width: 80%; padding: .45rem .7rem; border-radius: 10px; white-space: pre-wrap; }
  .user { align-self: flex-end; background: #effdde; }
  .bot { align-self: flex-start; background: white; }
  .keyboard { display: flex; gap: .3rem; margin-top: .4rem; flex-wrap: wrap; }
  .keyboard button { flex: 1; padding: .35rem; border: 0; border-radius: 6px; background: #e4eef7; cursor: pointer; }
  form { max-width: 640px; margin: 0 auto; display: flex; gap: .4rem; padding: 0 1rem 1rem; }
  input { flex: 1; padding: .5rem; font: inherit; }
  button[type=submit] { padding: .5rem 1rem; font: inherit; }
</style>
</head>
<body>
<header><strong>botstack demo</strong> <small>— chatting with bot __BOT__ through the Bot API emulator (no Telegram, no token)</small></header>
<div id="log" aria-live="polite"></div>
<form id="send"><input id="text" autocomplete="off" placeholder="Try /start, /menu, /remember milk, /recall" aria-label="Message">
<button type="submit">Send</button></form>
<script>
(function () {
  const bot = "__BOT__", user = {id: __USER__, first_name: "Demo", username: "demo_user"};
  const log = document.getElementById("log"), shown = {};
  function bubble(cls, text, id) {
    const div = document.createElement("div");
    div.className = "msg " + cls; div.textContent = text;
    if (id) div.dataset.messageId = id;
    log.appendChild(div); return div;
  }
  function keyboard(div, markup, messageId) {
    div.querySelectorAll(".keyboard").forEach(function (k) { k.remove(); });
    if (!markup || !markup.inline_keyboard) return;
    markup.inline_keyboard.forEach(function (row) {
      const line = document.createElement("div"); line.className = "keyboard";
      row.forEach(function (b) {
        const button = document.createElement("button"); button.textContent = b.text;
        button.onclick = function () { post({callback_data: b.callback_data, message_id: messageId, user: user}); };
        line.appendChild(button);
      });
      div.appendChild(line);
    });
  }
  async function post(body) {
    await fetch("/_emulator/bots/" + bot + "/updates", {method: "POST", headers: {"Content-Type": "application/json"},
                                                       body: JSON.stringify(body)});
  }
  document.getElementById("send").onsubmit = async function (e) {
    e.preventDefault();
    const input = document.getElementById("text"), text = input.value.trim();
    if (!text) return;
    input.value = ""; bubble("user", text); await post({text: text, user: user});
  };
  async function poll() {
    try {
      const sent = await (await fetch("/_emulator/bots/" + bot + "/sent", {cache: "no-store"})).json();
      for (const m of sent) {
        if (m.chat_id !== user.id) continue;
        if (m.kind === "message" && !shown[m.message_id]) {
          shown[m.message_id] = bubble("bot", m.text, m.message_id); keyboard(shown[m.message_id], m.reply_markup, m.message_id);
        } else if (m.kind === "edit" && shown[m.message_id] && !m.error && shown[m.message_id].dataset.edit !== String(sent.indexOf(m))) {
          const div = shown[m.message_id]; div.dataset.edit = String(sent.indexOf(m));
          div.firstChild.textContent = m.text; keyboard(div, m.reply_markup, m.message_id);
        }
      }
    } catch (e) { /* the next poll tries again */ }
  }
  setInterval(poll, 700);
})();
</script>
</body>
</html>
"""


def chat_page(bot_id: int, user_id: int) -> str:
    return PAGE.replace("__BOT__", escape(str(int(bot_id)))).replace("__USER__", str(int(user_id)))
