"""The sandbox's state directory: one JSON file with everything ``up`` set up."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    """``$OCEAN_SANDBOX_DIR`` or ``./.sandbox``."""
    return Path(os.environ.get("OCEAN_SANDBOX_DIR") or ".sandbox").absolute()


def load_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no sandbox state in {state_dir}: run `ocean-sandbox up` first")
    return json.loads(path.read_text())


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(state_dir / STATE_FILE)
