"""SecurityAdmin: manages the cluster's users and ACLs through the coordinator's Security service
(what `brokerlab users` / `brokerlab acls`, LocalCluster and the chaos credential fault use).
Passwords are salted and hashed here; only the SCRAM credential travels."""
from __future__ import annotations

import grpc

from client.common import errors
from client.common.network import ChannelPool
from client.common.pb import metadata_pb2 as mpb
from client.common.pb import metadata_pb2_grpc as mgrpc
from client.common.pb import security_pb2 as spb
from client.common.pb import security_pb2_grpc as sgrpc
from node.auth import call_metadata
from node.security import acl as A
from node.security.credentials import DEFAULT_ITERATIONS, SCRAM_MECHANISMS, check_mechanism, make_credential
from node.security.service import binding_from_pb, binding_pb, filter_pb


class SecurityAdmin:
    def __init__(self, bootstrap: str, control_token: str | None, channel_credentials=None, timeout_s: float = 15.0):
        self.pool = ChannelPool("client:security-admin", metadata=call_metadata(control_token),
                                channel_credentials=channel_credentials)
        self.bootstrap = [s.strip() for s in bootstrap.split(",") if s.strip()]
        self.timeout_s = timeout_s
        self._coordinator: str | None = None

    def close(self) -> None:
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stub(self) -> sgrpc.SecurityStub:
        if self._coordinator is None:
            last = None
            for addr in self.bootstrap:  # the Security service lives on the coordinator: ask Metadata where
                try:
                    # wait_for_ready: a (TLS) connection still being set up on a loaded machine is waited
                    # for within the deadline instead of failing the first call as UNAVAILABLE
                    md = mgrpc.MetadataStub(self.pool.get(addr)).GetMetadata(
                        mpb.MetadataRequest(), timeout=self.timeout_s, wait_for_ready=True)
                    self._coordinator = md.controller or addr
                    break
                except grpc.RpcError as e:
                    last = e
            if self._coordinator is None:
                raise errors.KafkaConnectionError(f"no node of {','.join(self.bootstrap)} answered: "
                                                  f"{last.code().name if last else '?'}")
        return sgrpc.SecurityStub(self.pool.get(self._coordinator))

    def _call(self, method: str, request):
        try:
            resp = getattr(self._stub(), method)(request, timeout=self.timeout_s, wait_for_ready=True)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise errors.ClusterAuthorizationFailedError(e.details()) from None
            raise errors.KafkaConnectionError(f"{method}: {e.code().name}: {e.details()}") from None
        if getattr(resp, "error_code", 0):
            raise errors.for_code(resp.error_code, resp.error_message)
        return resp

    # -- users (kafka-configs --entity-type users) ---------------------------
    def create_user(self, user: str, password: str, mechanisms=SCRAM_MECHANISMS,
                    iterations: int = DEFAULT_ITERATIONS) -> int:
        ups = []
        for m in mechanisms:
            c = make_credential(password, check_mechanism(m), iterations)
            ups.append(spb.ScramCredentialUpsertion(user=user, mechanism=m.upper(), salt=c.salt,
                                                    stored_key=c.stored_key, server_key=c.server_key,
                                                    iterations=c.iterations))
        return self._call("AlterUsers", spb.AlterUsersRequest(upsertions=ups)).version

    def delete_user(self, user: str, mechanism: str | None = None) -> int:
        d = spb.ScramCredentialDeletion(user=user, mechanism=check_mechanism(mechanism) if mechanism else "")
        return self._call("AlterUsers", spb.AlterUsersRequest(deletions=[d])).version

    def list_users(self) -> list[spb.UserDescription]:
        return list(self._call("DescribeUsers", spb.DescribeUsersRequest()).users)

    def revoke_user(self, user: str, revoked: bool = True) -> int:
        return self._call("RevokeUser", spb.RevokeUserRequest(user=user, revoked=revoked)).version

    # -- ACLs (kafka-acls) ---------------------------------------------------
    def create_acls(self, bindings: list[A.AclBinding]) -> list[A.AclBinding]:
        resp = self._call("CreateAcls", spb.CreateAclsRequest(acls=[binding_pb(b) for b in bindings]))
        return [binding_from_pb(b) for b in resp.acls]

    def delete_acls(self, flt: A.AclFilter) -> list[A.AclBinding]:
        return [binding_from_pb(b) for b in self._call("DeleteAcls", spb.AclFilterRequest(filter=filter_pb(flt))).acls]

    def describe_acls(self, flt: A.AclFilter | None = None) -> list[A.AclBinding]:
        flt = flt or A.AclFilter()
        return [binding_from_pb(b) for b in self._call("DescribeAcls",
                                                       spb.AclFilterRequest(filter=filter_pb(flt))).acls]
