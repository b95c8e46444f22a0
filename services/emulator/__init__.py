"""A Bot API emulator: a TEST DOUBLE for Telegram, never a substitute for it in production.

Tests, CI and a zero-token demo cannot reach api.telegram.org, so `python -m services.emulator`
answers `/bot<token>/<method>` the way the real Bot API server (tdlib/telegram-bot-api) does for
the few methods a bot stack needs, and adds `/_emulator/...` controls so tests can drive it and
see what the bot did (controls.py lists them). All state is in memory, per bot id.

Reproduced, with the real server's wording (each module names the server code it follows):
- the reply envelope; 401 "Unauthorized" for a malformed or wrong token; 404 "Not Found" for an
  unknown method; case-insensitive method names; arguments from the query string, a form or a
  JSON body, read as leniently as the server reads them;
- getUpdates: offset confirms (a negative one keeps the last updates), limit 1..100, timeout
  0..50 s, pending updates at once, 409 "Conflict: terminated by other getUpdates request; ..."
  for the held poll when another has to wait, the per-bot 409 throttle, the repeat-offset rule
  (same offset within 3 s waits at least 3 s; within 0.5 s gets limit 1), and 409 while a
  webhook is set (state.py);
- allowed_updates, applied when an update is created, with Telegram's default set (updates.py);
- setWebhook (rate limit with 429 + retry_after, secret_token check, "terminated by setWebhook
  request", drop_pending_updates, "Webhook was set" / "is already set"), deleteWebhook,
  getWebhookInfo with last_error_* (webhook.py);
- webhook delivery: JSON POSTs, one update each, secret header, 2xx confirms, failures recorded
  and retried (delivery.py);
- sendMessage with reply_parameters / reply_to_message_id (400 for a missing message unless
  allow_sending_without_reply) and reply_markup (inline keyboards validated and echoed),
  flood control: 429 "Too Many Requests: retry after N" past the published per-chat, per-group
  and overall sending limits (flood.py; on by default, --no-flood-control turns it off),
  editMessageText (400 "message to edit not found", 400 "message is not modified: ...", the
  keyboard goes when reply_markup is omitted), answerCallbackQuery (once per query)
  (messages.py, markup.py).

Not reproduced:
- every other method (404), files and multipart bodies, certificates, inline mode, groups and
  channels beyond their ids, @username chat ids; parse_mode and entities (text is stored as sent);
  "chat not found" for chats that never wrote to the bot; text length in UTF-16 units;
- the answer window of callback queries, update expiry after 24 h, the ~1-2 ms batching delay before a woken poll returns;
- api.telegram.org's webhook rules: https only, ports 80/88/443/8443, no private IPs. Like a local
  Bot API server, any http(s) URL whose host resolves is accepted, so tests use 127.0.0.1
  (and `--plain-http-webhooks` delivers https:// URLs over http, as behind a TLS proxy);
- the real delivery schedule: the emulator sends one update at a time in order (max_connections
  is only reported), retries after 0.5 s doubling to 5 s (the server: at once, then doubling to
  60-120 s, dropping an update after about a day), ignores method calls in the webhook's reply.

Beyond the real server, for tests: a poll whose client disconnected is released instead of
being answered with a 409 into a dead socket, every poll is recorded with whether it overlapped
another connected one, and every sent message, edit and callback answer names the update it
responds to (attribution.py).
"""
