"""Nemesis: takes a HISTORY.md nemesis op, carries it out on the cluster, returns it completed.

The completion is always `info` (a fault's effect is never certain); its value names the concrete
targets (`{"nodes": [...]}` or `{"groups": [[...], [...]]}`); a failure adds `"error"`.
Op values it understands (what chaos/schedule.py emits, or written by hand):

    kill / stop / pause / restart   {"target": "one"|"leader-of"|..., "topic", "partition"} or {"nodes": [...]}
    start / resume                  same; no value = the nodes this nemesis took down / paused (else all)
    partition                       {"shape": "halves"|...} or {"groups": [[...], ...], "one_way": false}
                                    or {"target"|"nodes"}: those nodes cut off from all the others
    drop-response                   {"target"|"nodes" (default every broker), "p", "method": "Produce"}
    delay                           {"target"|"nodes", "ms", "jitter_ms"} (every link of those nodes) or {"links": ["A:B"], ...}
    loss                            {"target"|"nodes"|"links", "p"}
    heartbeat-delay / heartbeat-drop {"target"|"nodes", "ms"}
    clock                           {"target"|"nodes", "offset_ms", "strobe_ms", "period_ms"}
    heal                            null (everything), or {"of": fault f, "nodes": [...]} (what one fault did)

A fault op may carry `fault_id` and its recovery op `recovers` (chaos/schedule.py): the recovery
then undoes exactly what that fault did (the nodes it killed, paused or skewed, the rules of its
kind), so overlapping schedules do not end each other's faults early.
"""
from __future__ import annotations

import random
from typing import ClassVar

from chaos.controller import ChaosController
from chaos.targets import grudge_of_groups, partition_shape, resolve_nodes


class Nemesis:
    def __init__(self, controller: ChaosController, seed: int = 0):
        self.c = controller
        self.rng = random.Random(seed)
        self.down: set[str] = set()  # nodes this nemesis killed or stopped
        self.paused: set[str] = set()
        self.applied: dict[str, dict] = {}  # fault_id -> the fault op as completed

    def _recovery_value(self, op: dict):
        """The value that undoes exactly the fault `op["recovers"]` names (None: it left nothing to undo)."""
        fault = self.applied.pop(op["recovers"], None)
        if fault is None:
            return None
        nodes = (fault.get("value") or {}).get("nodes") if isinstance(fault.get("value"), dict) else None
        if fault.get("error") and not nodes:
            return None  # it failed before touching a node
        if op["f"] == "heal":
            return {"of": fault["f"], **({"nodes": nodes} if nodes else {})}
        return {"nodes": nodes} if nodes else None

    def invoke(self, op: dict) -> dict:
        done = dict(op)
        done["type"] = "info"
        value = op.get("value") or {}
        if op.get("recovers") is not None:
            value = self._recovery_value(op)
            if value is None:
                done["value"] = {"nodes": []}
                return done
        try:
            handler = getattr(self, "_" + op["f"].replace("-", "_"), None)
            if handler is None:
                raise ValueError(f"unknown nemesis f '{op['f']}'")
            done["value"] = handler(dict(value) if isinstance(value, dict) else value)
        except Exception as e:  # noqa: BLE001 - a nemesis op never raises into the runner; it records the error
            done["error"] = f"{type(e).__name__}: {e}"
        if op.get("fault_id") is not None:
            self.applied[op["fault_id"]] = done
        return done

    def heal(self) -> dict:
        return self.invoke({"process": "nemesis", "type": "info", "f": "heal", "value": None})

    # -- targets ---------------------------------------------------------
    def _nodes(self, value: dict, default: str = "one") -> list[str]:
        if value.get("nodes"):
            nodes = list(value["nodes"])
            for n in nodes:
                self.c.node(n)
            return nodes
        return resolve_nodes(value.get("target", default), self.c.view(), self.rng,
                             value.get("topic"), value.get("partition"))

    # -- process faults --------------------------------------------------
    def _kill(self, value):
        nodes = self._nodes(value)
        self.c.kill(*nodes)
        self.down.update(nodes)
        return {"nodes": nodes}

    def _stop(self, value):
        nodes = self._nodes(value)
        self.c.stop(*nodes)
        self.down.update(nodes)
        return {"nodes": nodes}

    def _restart(self, value):
        nodes = self._nodes(value)
        self.c.restart(*nodes)
        return {"nodes": nodes}

    def _pause(self, value):
        nodes = self._nodes(value)
        self.c.pause(*nodes)
        self.paused.update(nodes)
        return {"nodes": nodes}

    def _start(self, value):
        nodes = self._nodes(value) if value else sorted(self.down or self.c.view().nodes)
        self.c.start(*nodes)
        self.down.difference_update(nodes)
        return {"nodes": nodes}

    def _resume(self, value):
        nodes = self._nodes(value) if value else sorted(self.paused or self.c.view().nodes)
        self.c.resume(*nodes)
        self.paused.difference_update(nodes)
        return {"nodes": nodes}

    # -- network and clock faults ----------------------------------------
    def _partition(self, value):
        if value.get("target") or value.get("nodes"):
            nodes = self._nodes(value)
            value = {"groups": [sorted(nodes), [n for n in sorted(self.c.view().nodes) if n not in nodes]]}
        if value.get("groups"):
            groups = [list(g) for g in value["groups"]]
            self.c.partition(groups, bool(value.get("one_way")))
            return {"groups": groups, "grudge": grudge_of_groups(groups, bool(value.get("one_way")))}
        plan = partition_shape(value.get("shape", "isolate-one"), self.c.view(), self.rng,
                               value.get("topic"), value.get("partition"))
        self.c.partition_grudge(plan.grudge)
        out = {"shape": value.get("shape", "isolate-one"), "grudge": plan.grudge}
        if plan.groups is not None:
            out["groups"] = plan.groups
        return out

    def _drop_response(self, value):
        nodes = self._nodes(value, "broker") if value.get("target") or value.get("nodes") \
            else sorted(self.c.view().brokers)
        p, method = float(value.get("p", 0.3)), value.get("method", "Produce")
        self.c.drop_response(nodes, p, method)
        return {"nodes": nodes, "p": p, "method": method}

    def _links(self, value) -> tuple[list[str], dict]:
        if value.get("links"):
            return list(value["links"]), {"links": list(value["links"])}
        nodes = self._nodes(value)
        return [f"{n}:*" for n in nodes] + [f"client:*:{n}" for n in nodes], {"nodes": nodes}

    def _delay(self, value):
        links, out = self._links(value)
        ms, jitter = int(value.get("ms", 200)), int(value.get("jitter_ms", 0))
        self.c.delay(links, ms, jitter)
        return {**out, "ms": ms, "jitter_ms": jitter}

    def _loss(self, value):
        links, out = self._links(value)
        p = float(value.get("p", 0.2))
        self.c.loss(links, p)
        return {**out, "p": p}

    def _heartbeat_delay(self, value):
        nodes = [n for n in self._nodes(value, "broker") if n != "coordinator"]
        ms = int(value.get("ms", 5000))
        self.c.heartbeat_delay(nodes, ms)
        return {"nodes": nodes, "ms": ms}

    def _heartbeat_drop(self, value):
        nodes = [n for n in self._nodes(value, "broker") if n != "coordinator"]
        self.c.heartbeat_drop(nodes)
        return {"nodes": nodes}

    def _clock(self, value):
        nodes = self._nodes(value)
        offset, strobe, period = (int(value.get(k, 0)) for k in ("offset_ms", "strobe_ms", "period_ms"))
        for n in nodes:
            self.c.clock(n, offset, strobe, period)
        return {"nodes": nodes, "offset_ms": offset, "strobe_ms": strobe, "period_ms": period}

    # tags of the rules each network fault adds (chaos/controller.py)
    _TAGS: ClassVar[dict[str, str]] = {"partition": "partition", "delay": "delay", "loss": "loss", "heartbeat-delay": "heartbeat",
             "heartbeat-drop": "heartbeat", "drop-response": "drop-response"}

    def _heal(self, value):
        if isinstance(value, dict) and value.get("of"):
            return self._heal_one(value)
        out = self.c.heal()
        self.down.clear()
        self.paused.clear()
        return out

    def _heal_one(self, value: dict) -> dict:
        """Undoes one fault: its kind of rules, or the clock skew of its nodes."""
        f = value["of"]
        if f == "clock":
            for n in value.get("nodes", []):
                self.c.clock(n, 0, 0, 0)
        elif f in self._TAGS:
            self.c.heal_network(self._TAGS[f])
        else:
            raise ValueError(f"heal of '{f}': not a network or clock fault")
        return dict(value)
