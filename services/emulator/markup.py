"""reply_markup as the server parses it (Client::get_reply_markup): the same 400s for bad keyboards,
and the inline keyboard echoed back in the sent Message (other keyboards are not echoed).
"""

from __future__ import annotations

from services.emulator.errors import ApiError, json_param

MAX_CALLBACK_DATA_BYTES = 64
# Button kinds other than url/callback_data count when present, even empty (switch_inline_query "").
PRESENCE_KINDS = ("login_url", "switch_inline_query", "switch_inline_query_current_chat",
                  "switch_inline_query_chosen_chat", "callback_game", "pay", "web_app", "copy_text")


def parse_reply_markup(value) -> dict | None:
    """The inline keyboard to echo, None when there is none; ApiError(400) when malformed."""
    if value in (None, ""):
        return None
    value = json_param(value, "Bad Request: can't parse reply keyboard markup JSON object")
    if not isinstance(value, dict):
        raise ApiError(400, "Bad Request: object expected as reply markup")
    rows = value.get("inline_keyboard")
    if rows is None:
        return None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(
            400, 'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
        )
    keyboard = [[_button(button) for button in row] for row in rows]
    return {"inline_keyboard": keyboard} if any(keyboard) else None


def _button(button) -> dict:
    def bad(reason: str) -> ApiError:
        return ApiError(400, f"Bad Request: can't parse inline keyboard button: {reason}")

    if not isinstance(button, dict):
        raise bad("InlineKeyboardButton must be an Object")
    if not isinstance(button.get("text"), str):
        raise bad('Can\'t find field "text"')
    data = button.get("callback_data")
    if data not in (None, "") and len(str(data).encode()) > MAX_CALLBACK_DATA_BYTES:
        raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    if not (button.get("url") or data or any(kind in button for kind in PRESENCE_KINDS)):
        raise bad("Text buttons are unallowed in the inline keyboard")
    return {key: val for key, val in button.items() if val not in (None, "") or key in PRESENCE_KINDS}
