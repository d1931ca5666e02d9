"""Producer id allocation for idempotent producers (the transaction coordinator's first duty).

Ids are handed out from blocks whose upper bound is persisted before any id
in the block is used, so a coordinator restart never reissues an id.
"""
from __future__ import annotations

import threading

from client.common.pb import txn_pb2 as tpb
from client.common.pb import txn_pb2_grpc as tgrpc

BLOCK = 1000


class ProducerIdManager:
    def __init__(self, store):
        self.store = store
        self.lock = threading.Lock()
        self.next_id = store.get_json("producer_id_block", 0)
        self.block_end = self.next_id  # forces a persisted block before the first id

    def allocate(self) -> int:
        with self.lock:
            if self.next_id >= self.block_end:
                self.block_end = self.next_id + BLOCK
                self.store.put_json("producer_id_block", self.block_end)
            pid = self.next_id
            self.next_id += 1
            return pid


class IdempotentInitServicer(tgrpc.TxnCoordinatorServicer):
    """InitProducerId for producers without a transactional.id."""

    def __init__(self, ids: ProducerIdManager):
        self.ids = ids

    def InitProducerId(self, request, context):
        return tpb.InitProducerIdResponse(producer_id=self.ids.allocate(), producer_epoch=0)


class ProducerIdExtension:
    def __init__(self, node):
        self.ids = ProducerIdManager(node.store)

    def register(self, server) -> None:
        tgrpc.add_TxnCoordinatorServicer_to_server(IdempotentInitServicer(self.ids), server)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def tick(self) -> None:
        pass
