"""Nemesis: takes a HISTORY.md nemesis op, carries it out on the cluster, returns it completed.

The completion is always `info` (a fault's effect is never certain); its value names the concrete
targets (`{"nodes": [...]}` or `{"groups": [[...], [...]]}`) and what was actually done, per node:
`"applied"` (the nodes whose agent confirmed it) and, when some did not, `"failed"` (node -> error:
certainly not done) and `"unknown"` (node -> error: the agent did not answer, it may be done);
either adds `"error"`. A resume whose node runs again without the rules set while it was paused
counts as applied and names it in `"rules_not_taken"` (node -> error). Network faults are rule sets
held by every node, so they apply to all.
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
    revoke-user / restore-user      {"user": "alice"}: SASL authentication fails for that user (its open
                                    connections close) / works again; the credential is kept
    heal                            null (everything), {"nodes": [...]} (everything on those nodes),
                                    or {"of": fault f, "nodes": [...]} (what one fault did)

A fault op may carry `fault_id` and its recovery op `recovers` (chaos/schedule.py): the recovery
then undoes exactly what that fault did (the nodes it killed, paused or skewed, the rules of its
kind), so overlapping schedules do not end each other's faults early.
"""
from __future__ import annotations

import random
from typing import ClassVar

from chaos.controller import ChaosController, OutcomeUnknown, PartialFaultError
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
        v = fault.get("value") if isinstance(fault.get("value"), dict) else {}
        # A fault that reached only some nodes is undone on those (its "applied", and those it may have).
        nodes = v.get("applied", []) + sorted(v.get("unknown", {})) if fault.get("error") and "applied" in v \
            else v.get("nodes")
        if fault["f"] == "revoke-user":
            return {"of": "revoke-user", "user": v.get("user")} if v.get("user") and not fault.get("error") else None
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
        except _NotApplied as e:
            done["value"], done["error"] = e.value, e.error
        except Exception as e:  # noqa: BLE001 - a nemesis op never raises into the runner; it records the error
            done["error"] = f"{type(e).__name__}: {e}"
        if op.get("fault_id") is not None:
            self.applied[op["fault_id"]] = done
        return done

    def _apply(self, out: dict, call, *args, nodes: list[str] | None = None) -> list[str]:
        """Runs a controller call that acts on `nodes` (default: every node, as rule sets do) and
        records on `out` which nodes took it; when some did not, records which and why and fails
        the op with that value. Returns the nodes that took it."""
        for attr, empty in (("last_layers", []), ("last_rules_not_taken", {})):
            if hasattr(self.c, attr):
                setattr(self.c, attr, empty)
        try:
            call(*args)
        except PartialFaultError as e:
            out["applied"] = e.applied
            if e.failed or not e.unknown:
                out["failed"] = e.failed
            if e.unknown:
                out["unknown"] = e.unknown
            raise _NotApplied(out, f"{type(e).__name__}: {e}") from None
        finally:
            # Which layer applies the fault: "edge" (the nodes' gRPC / Kafka edge), "kernel" (nftables).
            layers = getattr(self.c, "last_layers", None)
            if layers:
                out["layer"] = "+".join(layers)
            not_taken = getattr(self.c, "last_rules_not_taken", None)
            if not_taken:
                out["rules_not_taken"] = dict(not_taken)
        out["applied"] = list(nodes) if nodes is not None else self.c.node_names()
        return out["applied"]

    def heal(self, nodes: list[str] | None = None) -> dict:
        return self.invoke({"process": "nemesis", "type": "info", "f": "heal",
                            "value": {"nodes": list(nodes)} if nodes else None})

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
    def _process(self, call, nodes: list[str], add_to: set | None = None, remove_from: set | None = None) -> dict:
        """Runs a process fault on each node; tracks (down / paused) the nodes it reached or may have
        (so a later start / resume / heal undoes it); a node is back only once its agent confirmed."""
        out = {"nodes": nodes}
        try:
            self._apply(out, call, *nodes, nodes=nodes)
        finally:
            took = out.get("applied", [])
            if add_to is not None:
                add_to.update(took, out.get("unknown", {}))
            if remove_from is not None:
                remove_from.difference_update(took)
        return out

    def _kill(self, value):
        return self._process(self.c.kill, self._nodes(value), add_to=self.down)

    def _stop(self, value):
        return self._process(self.c.stop, self._nodes(value), add_to=self.down)

    def _restart(self, value):
        return self._process(self.c.restart, self._nodes(value))

    def _pause(self, value):
        return self._process(self.c.pause, self._nodes(value), add_to=self.paused)

    def _start(self, value):
        nodes = self._nodes(value) if value else sorted(self.down or self.c.view().nodes)
        return self._process(self.c.start, nodes, remove_from=self.down)

    def _resume(self, value):
        nodes = self._nodes(value) if value else sorted(self.paused or self.c.view().nodes)
        return self._process(self.c.resume, nodes, remove_from=self.paused)

    # -- network and clock faults ----------------------------------------
    def _partition(self, value):
        if value.get("target") or value.get("nodes"):
            nodes = self._nodes(value)
            value = {"groups": [sorted(nodes), [n for n in sorted(self.c.view().nodes) if n not in nodes]]}
        if value.get("groups"):
            groups = [list(g) for g in value["groups"]]
            one_way = bool(value.get("one_way"))
            out = {"groups": groups, "grudge": grudge_of_groups(groups, one_way)}
            self._apply(out, self.c.partition, groups, one_way)
            return out
        plan = partition_shape(value.get("shape", "isolate-one"), self.c.view(), self.rng,
                               value.get("topic"), value.get("partition"))
        out = {"shape": value.get("shape", "isolate-one"), "grudge": plan.grudge}
        if plan.groups is not None:
            out["groups"] = plan.groups
        self._apply(out, self.c.partition_grudge, plan.grudge)
        return out

    def _drop_response(self, value):
        nodes = self._nodes(value, "broker") if value.get("target") or value.get("nodes") \
            else sorted(self.c.view().brokers)
        p, method = float(value.get("p", 0.3)), value.get("method", "Produce")
        out = {"nodes": nodes, "p": p, "method": method}
        self._apply(out, self.c.drop_response, nodes, p, method)
        return out

    def _links(self, value) -> tuple[list[str], dict]:
        if value.get("links"):
            return list(value["links"]), {"links": list(value["links"])}
        nodes = self._nodes(value)
        return [f"{n}:*" for n in nodes] + [f"client:*:{n}" for n in nodes], {"nodes": nodes}

    def _delay(self, value):
        links, out = self._links(value)
        ms, jitter = int(value.get("ms", 200)), int(value.get("jitter_ms", 0))
        out.update(ms=ms, jitter_ms=jitter)
        self._apply(out, self.c.delay, links, ms, jitter)
        return out

    def _loss(self, value):
        links, out = self._links(value)
        p = float(value.get("p", 0.2))
        out["p"] = p
        self._apply(out, self.c.loss, links, p)
        return out

    def _heartbeat_delay(self, value):
        nodes = [n for n in self._nodes(value, "broker") if n != "coordinator"]
        ms = int(value.get("ms", 5000))
        out = {"nodes": nodes, "ms": ms}
        self._apply(out, self.c.heartbeat_delay, nodes, ms)
        return out

    def _heartbeat_drop(self, value):
        nodes = [n for n in self._nodes(value, "broker") if n != "coordinator"]
        out = {"nodes": nodes}
        self._apply(out, self.c.heartbeat_drop, nodes)
        return out

    def _clock(self, value):
        nodes = self._nodes(value)
        offset, strobe, period = (int(value.get(k, 0)) for k in ("offset_ms", "strobe_ms", "period_ms"))
        out = {"nodes": nodes, "offset_ms": offset, "strobe_ms": strobe, "period_ms": period}
        self._apply(out, self._clock_each, nodes, offset, strobe, period, nodes=nodes)
        return out

    def _clock_each(self, nodes: list[str], offset: int, strobe: int, period: int) -> None:
        applied, failed, unknown = [], {}, {}
        for n in nodes:
            try:
                self.c.clock(n, offset, strobe, period)
            except OutcomeUnknown as e:
                unknown[n] = f"{type(e).__name__}: {e}"
                continue
            except Exception as e:  # noqa: BLE001 -- recorded per node; the others still get the skew
                failed[n] = f"{type(e).__name__}: {e}"
                continue
            applied.append(n)
        if failed or unknown:
            raise PartialFaultError("clock", applied, failed, unknown)

    # tags of the rules each network fault adds (chaos/controller.py)
    _TAGS: ClassVar[dict[str, str]] = {"partition": "partition", "delay": "delay", "loss": "loss", "heartbeat-delay": "heartbeat",
             "heartbeat-drop": "heartbeat", "drop-response": "drop-response"}

    def _heal(self, value):
        """Heals every node (or `value["nodes"]`), or undoes one fault (`value["of"]`). A full heal's
        value names the nodes healed and, per node, those that were not, with why: then the op
        carries an error."""
        if isinstance(value, dict) and value.get("of"):
            return self._heal_one(value)
        out = self.c.heal((value or {}).get("nodes"))
        self.down.difference_update(out["healed"])
        self.paused.difference_update(out["healed"])
        if out.get("failed"):
            raise _NotApplied(out, "heal failed on " + ", ".join(f"{n} ({e})"
                                                               for n, e in sorted(out["failed"].items())))
        return out

    def _revoke_user(self, value):
        if not value.get("user"):
            raise ValueError("revoke-user needs {\"user\": NAME}")
        self.c.revoke_user(value["user"])
        return {"user": value["user"], "nodes": []}

    def _restore_user(self, value):
        if not value.get("user"):
            raise ValueError("restore-user needs {\"user\": NAME}")
        self.c.revoke_user(value["user"], False)
        return {"user": value["user"], "nodes": []}

    def _heal_one(self, value: dict) -> dict:
        """Undoes one fault: its kind of rules, the clock skew of its nodes, or a revoked user."""
        f = value["of"]
        out = dict(value)
        if f == "revoke-user":
            self.c.revoke_user(value["user"], False)
            return out
        if f == "clock":
            nodes = list(value.get("nodes", []))
            self._apply(out, self._clock_each, nodes, 0, 0, 0, nodes=nodes)
        elif f in self._TAGS:
            self._apply(out, self.c.heal_network, self._TAGS[f])
        else:
            raise ValueError(f"heal of '{f}': not a network or clock fault")
        return out


class _NotApplied(Exception):
    """A nemesis op that some nodes did not take: its completed value (with "applied" / "failed")."""

    def __init__(self, value: dict, error: str):
        super().__init__(error)
        self.value, self.error = value, error

