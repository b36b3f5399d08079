"""The latency cache of ``mobilevision select``: measurements of one device and runtime in a JSON file, reused
only for the same network settings, timing protocol and library versions."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UserError
from .selection import GridPoint

__all__ = ["CACHE_FORMAT", "LatencyCache", "runtime_versions"]

CACHE_FORMAT = 1


def runtime_versions(runtime: str) -> dict[str, str]:
    import torch

    versions = {"torch": torch.__version__.split("+")[0], "format": str(CACHE_FORMAT)}
    if runtime.startswith("onnxruntime"):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    elif runtime.startswith("executorch"):
        from importlib.metadata import version

        versions["executorch"] = version("executorch")
    return versions


class LatencyCache:
    """Measurements of one device and runtime: ``{"device", "runtime", "entries": {key: entry}}`` in a JSON file;
    an entry (latency stats, MAdds, params, versions, date) is reused only for the same batch, threads and library
    versions."""

    def __init__(self, path: Path, device: str, runtime: str) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"device": device, "runtime": runtime, "entries": {}}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise UserError(f"latency cache {self.path} is not valid JSON ({e}); delete it to measure again")
            if isinstance(data, dict) and isinstance(data.get("entries"), dict):
                self.data = data

    @staticmethod
    def key(point: GridPoint, protocol: dict[str, Any]) -> str:
        """The point and everything that changes its numbers: the network-shaping recipe settings, batch, threads
        and the timing protocol (settle, warm-up, repeats). Both statistics (median, p90) are in every entry, so
        ``--statistic`` reads the same entry."""
        p = protocol
        return (f"{point.task}/{point.name}/{p['arch']}/batch{p['batch']}/threads{p['threads']}/settle{p['settle']}"
                f"/warmup{p['warmup']}/repeats{p['repeats']}")

    def get(self, point: GridPoint, protocol: dict[str, Any], versions: dict[str, str]) -> dict[str, Any] | None:
        entry = self.data["entries"].get(self.key(point, protocol))
        return entry if entry and entry.get("versions") == versions else None

    def put(self, point: GridPoint, protocol: dict[str, Any], entry: dict[str, Any]) -> None:
        self.data["entries"][self.key(point, protocol)] = entry

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
