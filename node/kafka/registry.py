"""One table of every Kafka API this node serves, from the API modules' HANDLERS."""
from __future__ import annotations

import importlib

API_MODULES = ("node.kafka.api_versions", "node.kafka.cluster_api", "node.kafka.log_api",
               "node.kafka.coordinator_api")


def load_handlers(modules=API_MODULES) -> dict:
    """api_key -> (min_version, max_version, handler); a module not written yet is skipped."""
    table: dict = {}
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        for key, entry in mod.HANDLERS.items():
            if key in table:
                raise ValueError(f"API key {key} is registered twice (again by {name})")
            lo, hi, fn = entry
            if not 0 <= lo <= hi or not callable(fn):
                raise ValueError(f"{name}: bad registry entry for API key {key}: {entry!r}")
            table[key] = entry
    return table
