"""Services that live in the coordinator process beside the controller.

Each extension has register(server), start(), stop() and tick(); the
group coordinator (issue D) and transaction coordinator (issue E) add
themselves here.
"""
from __future__ import annotations


def coordinator_extensions(node) -> list:
    from node.group_coordinator import GroupCoordinator
    from node.security.service import SecurityManager
    from node.txn_coordinator import TxnCoordinator
    return [TxnCoordinator(node), GroupCoordinator(node), SecurityManager(node, getattr(node, "security_gate", None))]
