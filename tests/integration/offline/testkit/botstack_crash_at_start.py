"""TEST-ONLY: a bot extension whose install() fails, so the bot dies at every start while the API
and the dashboard (which ask it for nothing) run fine: the quiet kind of broken deploy."""


def install(application) -> None:
    raise RuntimeError("botstack_crash_at_start: this build's bot cannot start")
