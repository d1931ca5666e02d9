"""The `brokerlab` command: assembles the click groups that live with the packages they drive."""
from __future__ import annotations

import importlib
import sys

import click

from client.common.errors import KafkaError

# Commands whose modules are costly to import (Flask), loaded when named: every `brokerlab` process
# (brokers, perf clients) would otherwise pay for them at startup.
_LAZY = {"serve": "chaos.serve:serve"}


class _Group(click.Group):
    """User errors print as one readable line and exit 1; no traceback."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(_LAZY))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in _LAZY:
            mod, _, attr = _LAZY[name].partition(":")
            try:
                cmd = getattr(importlib.import_module(mod), attr, None)
            except ImportError:
                return None
            if cmd is not None:
                self.add_command(cmd, name)
        return cmd

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise  # --help and friends: a RuntimeError subclass, but not an error
        except KafkaError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)
        except (FileNotFoundError, TimeoutError, RuntimeError, ValueError) as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="brokerlab")
def main() -> None:
    """brokerlab: a Kafka-semantics cluster as real processes, with chaos and a checker."""


def _add_commands() -> None:
    from chaos.cli import check
    from client.cli import consume, produce, topics
    from node.cli import agent_cmd, demo, node_cmd, up

    for cmd in (up, node_cmd, agent_cmd, demo, topics, produce, consume, check):
        main.add_command(cmd)
    # Command groups that later parts add; each lives with the package it drives.
    for optional in ("client.groups_cli:groups", "client.txn_cli:transactions", "client.dlq:dlq",
                     "client.perf:perf", "chaos.cli:chaos", "chaos.bench:bench",
                     "node.security.cli:users", "node.security.cli:acls", "node.security.cli:certs"):
        mod, _, attr = optional.partition(":")
        try:
            module = __import__(mod, fromlist=[attr])
        except ImportError:
            continue
        cmd = getattr(module, attr, None)
        if cmd is not None:
            main.add_command(cmd)


_add_commands()

if __name__ == "__main__":
    main()
