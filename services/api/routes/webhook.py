"""`POST /telegram/webhook`: the public door for Telegram's webhook, forwarded to the bot.

Railway (and most proxies) give a service one public port, the API's. The bot program
receives updates on 127.0.0.1 only; this route passes the request through unchanged (body and
secret-token header) and returns the bot's answer, so the secret check and deduplication
stay in one place, the bot. When the bot is not listening, 503 makes Telegram retry.
"""

import httpx
from fastapi import APIRouter, Request, Response

from services.api.deps import SettingsDep
from services.common.bodylimit import TELEGRAM_UPDATE_MAX_BYTES

router = APIRouter(tags=["telegram"])
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@router.post("/telegram/webhook", include_in_schema=False)
async def forward(request: Request, settings: SettingsDep) -> Response:
    body = await request.body()
    if len(body) > TELEGRAM_UPDATE_MAX_BYTES:  # the API's own limit may be larger, for your routes
        return Response(status_code=413)
    headers = {"content-type": request.headers.get("content-type", "application/json")}
    if SECRET_HEADER in request.headers:
        headers[SECRET_HEADER] = request.headers[SECRET_HEADER]
    client: httpx.AsyncClient = request.app.state.http
    try:
        answer = await client.post(
            f"http://127.0.0.1:{settings.bot_webhook_port}/telegram/webhook", content=body, headers=headers
        )
    except httpx.HTTPError:
        return Response('{"ok": false, "error": "bot not listening"}', status_code=503,
                        media_type="application/json")
    return Response(answer.content, status_code=answer.status_code, media_type="application/json")
