"""The timeline: what happened to the stack and when, as a chart read at a glance.

A server-rendered SVG (no front-end library): one lane per program and one for operations,
time running left to right over the last 24 hours or 7 days; each event a mark whose shape and
colour say what it was (crash, hang, FATAL, crash cycle, watchdog, escalation, an operator's
action), with its reason as a tooltip. The same events are listed below the chart, so the page
reads without the picture too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html import escape

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
LANES = ("mongodb", "api", "web", "bot", "healthcheck", "operations")
COLOURS = {"crash": "#cf222e", "hang": "#bc4c00", "fatal": "#82071e", "memory": "#9a6700", "cycle": "#8250df",
           "watchdog": "#0969da", "escalation": "#000000", "action": "#57606a", "deploy": "#1a7f37"}
WIDTH, LANE_H, LEFT, TOP = 900, 28, 110, 24


@dataclass(frozen=True)
class Event:
    at: datetime
    lane: str
    kind: str
    text: str


def events_from(health: list[dict], audit: list[dict], deploys: list[dict] = ()) -> list[Event]:
    found = [Event(_utc(d["time"]), d.get("program", "?"), d.get("cause", "?"), d.get("reason", "")) for d in health
             if isinstance(d.get("time"), datetime)]
    found += [Event(_utc(d["at"]), "operations", "action",
                    f"{d.get('actor', '?')}: {d.get('action', '?')} {d.get('target', '')}".strip()) for d in audit
              if isinstance(d.get("at"), datetime)]
    found += [Event(_utc(d["recorded_at"]), "operations", "deploy",
                    f"{d.get('result', '?')}: {str(d.get('from_sha') or '-')[:12]} -> {str(d.get('to_sha'))[:12]}"
                    + (f" ({d['reason']})" if d.get("reason") else "")) for d in deploys
              if isinstance(d.get("recorded_at"), datetime)]
    return sorted(found, key=lambda e: e.at, reverse=True)


def svg(events: list[Event], span: timedelta, now: datetime) -> str:
    start = now - span
    height = TOP + LANE_H * len(LANES) + 20
    width_t = (WIDTH - LEFT - 10) / span.total_seconds()
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-labelledby="timeline-title" class="timeline">',
             f'<title id="timeline-title">Restarts, heals and actions over the last {_span(span)}</title>']
    for i, lane in enumerate(LANES):
        y = TOP + i * LANE_H + LANE_H / 2
        parts.append(f'<text x="4" y="{y + 4:.0f}" class="lane">{lane}</text>'
                     f'<line x1="{LEFT}" x2="{WIDTH - 10}" y1="{y:.0f}" y2="{y:.0f}" class="axis"/>')
    ticks = 6
    for t in range(ticks + 1):
        x = LEFT + (WIDTH - LEFT - 10) * t / ticks
        when = start + span * t / ticks
        label = when.strftime("%H:%M") if span <= timedelta(days=1) else when.strftime("%a %H:%M")
        parts.append(f'<text x="{x:.0f}" y="{height - 4}" class="tick">{label}</text>')
    for e in events:
        if e.at < start or e.lane not in LANES:
            continue
        x = LEFT + (e.at - start).total_seconds() * width_t
        y = TOP + LANES.index(e.lane) * LANE_H + LANE_H / 2
        colour = COLOURS.get(e.kind, "#57606a")
        tip = escape(f"{e.at:%Y-%m-%d %H:%M:%S}Z {e.lane} {e.kind}: {e.text}")
        shape = (f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{colour}"'
                 if e.kind in ("action", "cycle", "escalation", "deploy") else
                 f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}"')
        parts.append(f'{shape} class="event {escape(e.kind)}"><title>{tip}</title>'
                     f'{"</rect>" if shape.startswith("<rect") else "</circle>"}')
    parts.append("</svg>")
    return "".join(parts)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _span(span: timedelta) -> str:
    return "24 hours" if span <= timedelta(days=1) else "7 days"
