"""Test controls under /_emulator/...: inject updates, read what the bot did, arm failures.

Not part of the Bot API; replies are plain JSON and errors are {"error": "..."}.

  GET  /_emulator/health                              {"status": "ok", "bots": n}
  POST /_emulator/bots/{id}/updates                   {"text", "user"?, "chat_id"?} | {"update": {...}}
                                                      | {"callback_data", "message_id", "user"?}
                                                      -> {"update_id", "queued"[, "callback_query_id"]}
  GET  /_emulator/bots/{id}/sent                      [{"kind": "message"|"edit"|"callback_answer",
                                                        "update_id", "error", ...}]
  GET  /_emulator/bots/{id}/stats                     {"polls", "conflicts", "pending", "polling_now",
                                                       "max_polling_at_once", "overlapping_polls",
                                                       "since", "sent"}
  POST /_emulator/bots/{id}/stats/reset               the stats, counted afresh from now
  GET  /_emulator/bots/{id}/polls                     [{"start", "end", "outcome", "overlapped"}]
  GET  /_emulator/bots/{id}/deliveries                [{"update_id", "url", "status", "error", "time",
                                                        "redelivery", "ok", "retry_after"}]
  POST /_emulator/bots/{id}/redeliver/{update_id}     one more POST of a delivered update -> its record
  POST /_emulator/bots/{id}/fail-next                 {"method", "error_code", "retry_after"?,
                                                       "description"?, "parameters"?, "times"?,
                                                       "answer_every"? (of N calls the last answered)}
                                                      | {"method", "black_hole": true, "times"?}
                                                      | {"method", "clear": true} (disarm)
                                                      -> {"method", "armed"}
  POST /_emulator/hooks/{name}                        a sink for other services' webhooks (an alert
                                                      channel's JSON POST): the body is kept
  GET  /_emulator/hooks/{name}                        [every body POSTed there, JSON or text]
  POST /_emulator/hooks/{name}/stall                  {"seconds", "times"?}: the next `times` (1)
                                                      POSTs there are answered `seconds` late
                                                      (a slow alert channel) -> the same
  GET  /_emulator/chat[?bot=<id>&user=<id>]         the demo's chat page (chat.py)
  GET  /_emulator/bots/{id}/flood                     {"enabled", "limits", "refused", "early_retries"}
  POST /_emulator/bots/{id}/flood                     {"enabled"?, "private"|"group"|"overall"?:
                                                       [messages, seconds]} -> the same
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from services.emulator.server import Emulator
    from services.emulator.state import BotState


def control_routes(emulator: Emulator) -> list[Route]:
    hooked: dict[str, list] = defaultdict(list)
    stalls: dict[str, list[float]] = defaultdict(list)  # per hook: the delays of its next POSTs

    def bot(request: Request) -> BotState:
        return emulator.bot_by_id(int(request.path_params["bot_id"]))

    async def body(request: Request) -> dict | None:
        try:
            spec = await request.json()
        except ValueError:
            return None
        return spec if isinstance(spec, dict) else None

    async def inject(request: Request) -> JSONResponse:
        spec = await body(request)
        if spec is None:
            return _error(400, "body must be a JSON object")
        try:
            update, queued = bot(request).inject_update(spec)
        except LookupError as exc:
            return _error(404, str(exc).strip("'\""))
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        reply = {"update_id": update["update_id"], "queued": queued}
        if "callback_query" in update:
            reply["callback_query_id"] = update["callback_query"]["id"]
        return JSONResponse(reply)

    async def sent(request: Request) -> JSONResponse:
        return JSONResponse(bot(request).sent)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(bot(request).stats())

    async def reset_stats(request: Request) -> JSONResponse:
        return JSONResponse(bot(request).reset_stats())

    async def polls(request: Request) -> JSONResponse:
        return JSONResponse(bot(request).poll_log.records())

    async def deliveries(request: Request) -> JSONResponse:
        return JSONResponse(bot(request).delivery.deliveries)

    async def redeliver(request: Request) -> JSONResponse:
        try:
            record = await bot(request).delivery.redeliver(int(request.path_params["update_id"]))
        except KeyError as exc:
            return _error(404, str(exc).strip("'\""))
        except LookupError as exc:
            return _error(409, str(exc))
        return JSONResponse(record)

    async def fail_next(request: Request) -> JSONResponse:
        spec = await body(request)
        if spec is None or "method" not in spec:
            return _error(400, 'body must be a JSON object with "method"')
        try:
            armed = bot(request).faults.arm(spec)
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return JSONResponse({"method": spec["method"], "armed": armed})

    async def flood(request: Request) -> JSONResponse:
        control = bot(request).flood
        if request.method == "GET":
            return JSONResponse(control.describe())
        spec = await body(request)
        if spec is None:
            return _error(400, "body must be a JSON object")
        try:
            return JSONResponse(control.configure(spec))
        except (TypeError, ValueError) as exc:
            return _error(400, f"limits are [messages, seconds]: {exc}")

    async def chat(request: Request):
        from services.emulator.chat import chat_page

        try:
            bot_id = int(request.query_params.get("bot") or next(iter(emulator.bots)))
            user_id = int(request.query_params.get("user", "424200"))
        except StopIteration:
            return _error(404, "no bot has called the emulator yet: start the stack, then reload")
        except ValueError:
            return _error(400, "bot and user are numbers")
        return HTMLResponse(chat_page(bot_id, user_id), headers={"Cache-Control": "no-store"})

    async def hooks(request: Request) -> JSONResponse:
        received = hooked[request.path_params["name"]]
        if request.method == "POST":
            raw = await request.body()
            delays = stalls[request.path_params["name"]]
            if delays:
                await asyncio.sleep(delays.pop(0))
            try:
                received.append(json.loads(raw))
            except ValueError:
                received.append(raw.decode(errors="replace"))
            return JSONResponse({"received": len(received)})
        return JSONResponse(received)

    async def stall(request: Request) -> JSONResponse:
        spec = await body(request)
        try:
            seconds, times = float(spec["seconds"]), int(spec.get("times", 1))
        except (TypeError, KeyError, ValueError):
            return _error(400, 'body must be {"seconds": number, "times"?: integer}')
        stalls[request.path_params["name"]] = [seconds] * times
        return JSONResponse({"seconds": seconds, "times": times})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "bots": len(emulator.bots)})

    prefix = "/_emulator/bots/{bot_id:int}"
    return [
        Route("/_emulator/health", health),
        Route("/_emulator/chat", chat),
        Route("/_emulator/hooks/{name}", hooks, methods=["GET", "POST"]),
        Route("/_emulator/hooks/{name}/stall", stall, methods=["POST"]),
        Route(f"{prefix}/updates", inject, methods=["POST"]),
        Route(f"{prefix}/sent", sent),
        Route(f"{prefix}/stats", stats),
        Route(f"{prefix}/stats/reset", reset_stats, methods=["POST"]),
        Route(f"{prefix}/polls", polls),
        Route(f"{prefix}/deliveries", deliveries),
        Route(f"{prefix}/redeliver/{{update_id:int}}", redeliver, methods=["POST"]),
        Route(f"{prefix}/fail-next", fail_next, methods=["POST"]),
        Route(f"{prefix}/flood", flood, methods=["GET", "POST"]),
    ]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
