"""Network and clock faults at a node's gRPC edge.

The rule table (`RuleTable.decide`) is the model: given the caller
(`x-src` metadata: a node name or `client:<client.id>`), this node's name and
the method, it says what happens to the call: pass, refuse before handling
(drop / loss), handle then lose the reply (drop-response), or delay first.
Every node holds the whole rule set and enforces it for traffic arriving at
it (requests) and for the replies it sends (so a partition also cuts replies
of calls that were in flight when it started). The agent keeps the rules
and hands them to a restarted node through the BROKERLAB_FAULTS variable.
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass

import grpc

from client.common.clock import SkewedClock
from client.common.pb import agent_pb2 as apb
from client.common.pb import agent_pb2_grpc as agrpc

log = logging.getLogger(__name__)

KINDS = ("drop", "drop-response", "delay", "loss")
LAYERS = ("", "edge", "kernel")
HEARTBEAT_METHODS = ("BrokerHeartbeat", "Heartbeat")


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    src: str = "*"
    dst: str = "*"
    delay_ms: int = 0
    jitter_ms: int = 0
    probability: float = 1.0
    method: str = ""  # "" any; else names separated by "|", matched against the method's last part
    tag: str = ""  # the fault that made it (partition, delay, heartbeat, ...), so one kind can be healed
    layer: str = ""  # "" (edge): decided here, at the node's gRPC / Kafka edge; "kernel": node.kernel_faults

    def matches(self, src: str, dst: str, method: str) -> bool:
        if self.dst not in ("*", dst):
            return False
        if self.src not in ("*", src) and not (self.src == "client:*" and src.startswith("client:")):
            return False
        if self.method:
            name = method.rsplit("/", 1)[-1]
            if name not in self.method.split("|"):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # pass, refuse, drop-response
    delay_ms: int = 0
    rule: Rule | None = None


PASS = Decision("pass")


class RuleTable:
    def __init__(self, rules: list[Rule] | None = None, seed: int = 0):
        self.rules = list(rules or [])
        self.rng = random.Random(seed)

    def decide(self, src: str, dst: str, method: str) -> Decision:
        delay = 0
        for r in self.rules:
            if not r.matches(src, dst, method):
                continue
            if r.kind == "drop":
                return Decision("refuse", delay, r)
            if r.kind == "loss" and self.rng.random() < r.probability:
                return Decision("refuse", delay, r)
            if r.kind == "drop-response" and self.rng.random() < r.probability:
                return Decision("drop-response", delay, r)
            if r.kind == "delay":
                jitter = self.rng.randint(-r.jitter_ms, r.jitter_ms) if r.jitter_ms else 0
                delay += max(0, r.delay_ms + jitter)
        return Decision("pass", delay) if delay else PASS


def rules_to_pb(rules: list[Rule]) -> list[apb.FaultRule]:
    return [apb.FaultRule(**asdict(r)) for r in rules]


def rules_from_pb(pbs) -> list[Rule]:
    out = []
    for p in pbs:
        if p.kind not in KINDS:
            raise ValueError(f"unknown fault kind '{p.kind}' (one of {', '.join(KINDS)})")
        if p.layer not in LAYERS:
            raise ValueError(f"unknown fault layer '{p.layer}' (one of edge, kernel)")
        out.append(Rule(p.kind, p.src or "*", p.dst or "*", p.delay_ms, p.jitter_ms,
                        p.probability if p.probability > 0 else 1.0, p.method, p.tag,
                        "" if p.layer in ("", "edge") else p.layer))
    return out


class FaultState:
    """The faults in force at one node; written by the fault service, read by interceptors."""

    def __init__(self, name: str):
        self.name = name
        self.clock = SkewedClock()
        self._lock = threading.Lock()
        self.table = RuleTable()  # replaced whole, never mutated: readers need no lock
        self.spec = apb.FaultRules()
        self.refused = 0  # counters for status; += from rpc threads, approximate is fine
        self.delayed = 0

    @classmethod
    def from_env(cls, name: str) -> FaultState:
        st = cls(name)
        raw = os.environ.get("BROKERLAB_FAULTS")
        if raw:
            from google.protobuf import json_format
            st.apply(json_format.Parse(raw, apb.FaultRules()))
        return st

    def apply(self, spec: apb.FaultRules) -> apb.FaultRules:
        # Kernel-layer rules are the agent's (nftables in this node's host): not applied twice here.
        table = RuleTable([r for r in rules_from_pb(spec.rules) if not r.layer], seed=spec.seed)
        with self._lock:
            self.table = table
            self.spec = spec
            self.clock.set(spec.clock_offset_ms, spec.clock_strobe_ms, spec.clock_strobe_period_ms)
        if spec.rules or spec.clock_offset_ms or spec.clock_strobe_ms:
            log.info("Fault rules now: %s", [f"{r.kind} {r.src}->{r.dst} {r.method}".strip() for r in table.rules])
        return spec

    def report(self) -> apb.FaultRules:
        out = apb.FaultRules()
        out.CopyFrom(self.spec)
        out.refused, out.delayed = self.refused, self.delayed
        return out

    def decide(self, src: str, method: str) -> Decision:
        """What happens to a request from `src` for `method` arriving here: the one fault decision
        for gRPC calls (the interceptor) and Kafka requests (node.kafka.server)."""
        table = self.table
        decision = table.decide(src, self.name, method) if table.rules else PASS
        if decision.action != "pass":
            self.refused += 1
        if decision.delay_ms:
            self.delayed += 1
        return decision

    def reply_refused(self, src: str, method: str) -> bool:
        """The reply crosses the network too: a partition made while a call (e.g. a long poll) was
        in flight must stop its reply. Rules are global, so the caller's are known here."""
        table = self.table
        if table.rules and table.decide(self.name, src, method).action == "refuse":
            self.refused += 1
            return True
        return False

    def server_interceptor(self) -> grpc.ServerInterceptor:
        return _ServerFaults(self)

    def client_interceptor(self):
        """Outbound calls need no rules of their own: the receiving node enforces them."""
        return _Noop()


class _Noop(grpc.UnaryUnaryClientInterceptor):
    def intercept_unary_unary(self, continuation, details, request):
        return continuation(details, request)


def _source(details) -> str:
    for k, v in details.invocation_metadata or ():
        if k == "x-src":
            return v
    return "client:unknown"


class _ServerFaults(grpc.ServerInterceptor):
    def __init__(self, state: FaultState):
        self.state = state

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        # Every call is wrapped, even with no rules now: a long poll accepted before a partition
        # must still lose its reply once the partition is in force.
        if handler is None or details.method.startswith("/brokerlab.Faults/"):
            return handler
        if handler.stream_stream is not None:
            return self._stream(handler, _source(details), details.method)
        if handler.unary_unary is None:
            return handler
        state = self.state
        src = _source(details)
        method = details.method
        decision = state.decide(src, method)
        inner = handler.unary_unary

        def behaviour(request, context):
            if decision.delay_ms:
                time.sleep(decision.delay_ms / 1000.0)
                if not context.is_active():
                    # The caller gave up (deadline) while the message was in flight: it never arrives,
                    # otherwise delayed heartbeats would still land late and keep a session alive.
                    context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "fault: delayed past the caller's deadline")
            if decision.action == "refuse":
                context.abort(grpc.StatusCode.UNAVAILABLE, f"fault: {src} -> {state.name} dropped")
            result = inner(request, context)
            if decision.action == "drop-response" or state.reply_refused(src, method):
                context.abort(grpc.StatusCode.UNAVAILABLE, f"fault: reply {state.name} -> {src} dropped")
            return result

        return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    def _stream(self, handler, src: str, method: str):
        """A long-lived stream (replica fetches) meets the rules per message, as a call per round
        did: every request is decided when it arrives (refuse or loss ends the stream, the follower
        reconnects; delay holds it), and every reply is checked before it leaves."""
        state = self.state
        inner = handler.stream_stream

        def behaviour(request_iterator, context):
            drop_reply = [False]

            def requests():
                for req in request_iterator:
                    decision = state.decide(src, method)
                    if decision.delay_ms:
                        time.sleep(decision.delay_ms / 1000.0)
                    if decision.action == "refuse":
                        context.abort(grpc.StatusCode.UNAVAILABLE, f"fault: {src} -> {state.name} dropped")
                    drop_reply[0] = decision.action == "drop-response"
                    yield req

            for resp in inner(requests(), context):
                if drop_reply[0] or state.reply_refused(src, method):
                    context.abort(grpc.StatusCode.UNAVAILABLE, f"fault: reply {state.name} -> {src} dropped")
                yield resp

        return grpc.stream_stream_rpc_method_handler(behaviour, request_deserializer=handler.request_deserializer,
                                                     response_serializer=handler.response_serializer)


class FaultServicer(agrpc.FaultsServicer):
    def __init__(self, state: FaultState):
        self.state = state

    def SetFaults(self, request, context):
        try:
            return self.state.apply(request)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    def GetFaults(self, request, context):
        return self.state.report()


def register_fault_service(server: grpc.Server, state: FaultState) -> None:
    agrpc.add_FaultsServicer_to_server(FaultServicer(state), server)


def faults_env(spec: apb.FaultRules) -> str:
    from google.protobuf import json_format
    return json.dumps(json_format.MessageToDict(spec, preserving_proto_field_name=True))
