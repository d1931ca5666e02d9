"""Security: TLS, SASL (PLAIN, SCRAM-SHA-256/512) and ACLs, off unless `security.protocol` says so.

Modules:
  credentials.py  SCRAM credentials as Kafka stores them (salt, stored key, server key, iterations).
  acl.py          Kafka's ACL model and AclAuthorizer's decision (DENY wins, implied DESCRIBE,
                  allow.everyone.if.no.acl.found, super.users).
  state.py        SecurityState: users and ACLs, the coordinator's persisted copy (JSON).
  sasl.py         the server side of one SASL exchange (PLAIN or SCRAM via scramp).
  gate.py         SecurityGate: the one layer the Kafka listener and the gRPC servicers call.
  kafka_authz.py  which resources each Kafka request touches, and its denial response.
  tls.py          certificates (the `cryptography` library) and ssl / gRPC credentials.
  service.py      the coordinator's Security gRPC service and the brokers' watcher of it.
"""
