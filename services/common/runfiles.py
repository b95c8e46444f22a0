"""Files in the run folder that one process rewrites while others read them (the verdict, the
bot's status, the sidecar's hand-overs): written whole to a temporary file and renamed over the
old one, so a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
