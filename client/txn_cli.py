"""`brokerlab transactions --list | --describe --transactional-id X`, like kafka-transactions."""
from __future__ import annotations

import time

import click

from client.cli import _servers, bootstrap_option, client_props
from client.common import errors


def _stub(bootstrap: str):
    from client.common.network import ChannelPool
    from client.common.pb import txn_pb2_grpc as tgrpc
    from client.common.security import channel_credentials_from_config, sasl_metadata
    from client.metadata import Metadata
    props = client_props(bootstrap)
    pool = ChannelPool("client:transactions-cli", metadata=sasl_metadata(props),
                       channel_credentials=channel_credentials_from_config(props))
    addr = Metadata(_servers(bootstrap), pool).controller_address()
    return addr, tgrpc.TxnCoordinatorStub(pool.get(addr))


def list_transactions(bootstrap: str, states=(), producer_ids=()) -> tuple[str, list]:
    from client.common.pb import txn_pb2 as tpb
    addr, stub = _stub(bootstrap)
    resp = stub.ListTransactions(tpb.ListTransactionsRequest(state_filters=list(states),
                                                             producer_id_filters=list(producer_ids)), timeout=10)
    if resp.error_code:
        raise errors.for_code(resp.error_code)
    return addr, list(resp.transactions)


def describe_transaction(bootstrap: str, transactional_id: str):
    from client.common.pb import txn_pb2 as tpb
    addr, stub = _stub(bootstrap)
    resp = stub.DescribeTransactions(tpb.DescribeTransactionsRequest(transactional_ids=[transactional_id]),
                                     timeout=10)
    d = resp.transactions[0]
    if d.error_code:
        raise errors.for_code(d.error_code, d.error_message)
    return addr, d


def _table(rows: list[list]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


@click.group("transactions", invoke_without_command=True)
@bootstrap_option
@click.option("--list", "do_list", is_flag=True, help="List transactional ids and their states.")
@click.option("--describe", "do_describe", is_flag=True, help="Describe one transactional id.")
@click.option("--transactional-id", default=None, help="For --describe.")
@click.option("--state", "states", multiple=True, help="For --list: only these states (e.g. Ongoing).")
@click.pass_context
def transactions(ctx, bootstrap, do_list, do_describe, transactional_id, states) -> None:
    """List and describe transactions (like kafka-transactions)."""
    if ctx.invoked_subcommand is not None:
        return
    if do_list == do_describe:
        raise click.UsageError("give exactly one of --list or --describe")
    if do_list:
        _print_list(bootstrap, states)
        return
    if not transactional_id:
        raise click.UsageError("--describe needs --transactional-id")
    addr, d = describe_transaction(bootstrap, transactional_id)
    start = d.transaction_start_time_ms
    duration = int(time.time() * 1000) - start if start >= 0 else -1
    parts = ",".join(f"{t.topic}-{p}" for t in d.topics for p in t.partitions)
    table = [["Coordinator", "TransactionalId", "ProducerId", "ProducerEpoch", "TransactionState",
              "TransactionTimeoutMs", "CurrentTransactionStartTimeMs", "TransactionDurationMs", "TopicPartitions"],
             [addr, d.transactional_id, d.producer_id, d.producer_epoch, d.transaction_state,
              d.transaction_timeout_ms, start if start >= 0 else "None", duration if duration >= 0 else "None",
              parts or "None"]]
    click.echo(_table(table))


@transactions.command("list")
@bootstrap_option
def list_cmd(bootstrap) -> None:
    """Same as --list."""
    _print_list(bootstrap, ())


def _print_list(bootstrap: str, states) -> None:
    addr, rows = list_transactions(bootstrap, states)
    table = [["TransactionalId", "Coordinator", "ProducerId", "TransactionState"]]
    table += [[t.transactional_id, addr, t.producer_id, t.transaction_state] for t in rows]
    click.echo(_table(table))
