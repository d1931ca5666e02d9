"""brokerlab's own client (gRPC): the workloads' original clients, unchanged."""
from __future__ import annotations

from chaos.workloads.eos import EosClient
from chaos.workloads.group import GroupClient
from chaos.workloads.log import LogClient
from chaos.workloads.txn import TxnClient

__all__ = ["LIBRARY", "WORKLOADS", "EosClient", "GroupClient", "LogClient", "TxnClient", "translate", "version"]

LIBRARY = "brokerlab"
WORKLOADS = frozenset({"log", "txn", "group", "group-members", "eos"})


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("brokerlab")
    except PackageNotFoundError:
        return "dev"


def translate(kind: str, props: dict) -> tuple[dict, list[str]]:
    return dict(props), []  # brokerlab's configs are Kafka's dotted keys
