"""Kafka's error table: one class per error code, with Kafka's numbers and flags.

Errors travel in response bodies as (code, message); `for_code` turns them
back into exceptions. Unknown codes are never dropped: they become
`UnknownServerError` carrying the original code.
"""
from __future__ import annotations


class KafkaError(Exception):
    code: int = -1
    name: str = "UNKNOWN_SERVER_ERROR"
    retriable: bool = False
    invalid_metadata: bool = False
    # definite: the operation surely did not take effect (history type "fail").
    definite: bool = True

    def __init__(self, message: str = "", *, code: int | None = None):
        super().__init__(message or self.name)
        self.message = message or self.name
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        if self.message and self.message != self.name:
            return f"{self.name}: {self.message}"
        return self.name


_BY_CODE: dict[int, type[KafkaError]] = {}
_BY_NAME: dict[str, type[KafkaError]] = {}


def _err(code: int, name: str, *, retriable: bool = False, invalid_metadata: bool = False,
         definite: bool = True) -> type[KafkaError]:
    cls_name = "".join(p.capitalize() for p in name.lower().split("_")) + "Error"
    cls = type(cls_name, (KafkaError,), {
        "code": code, "name": name, "retriable": retriable,
        "invalid_metadata": invalid_metadata, "definite": definite,
        "__module__": __name__,
    })
    _BY_CODE[code] = cls
    _BY_NAME[name] = cls
    return cls


UnknownServerError = _err(-1, "UNKNOWN_SERVER_ERROR", definite=False)
OffsetOutOfRangeError = _err(1, "OFFSET_OUT_OF_RANGE")
CorruptMessageError = _err(2, "CORRUPT_MESSAGE", retriable=True)
UnknownTopicOrPartitionError = _err(3, "UNKNOWN_TOPIC_OR_PARTITION", retriable=True, invalid_metadata=True)
InvalidFetchSizeError = _err(4, "INVALID_FETCH_SIZE")
LeaderNotAvailableError = _err(5, "LEADER_NOT_AVAILABLE", retriable=True, invalid_metadata=True)
NotLeaderOrFollowerError = _err(6, "NOT_LEADER_OR_FOLLOWER", retriable=True, invalid_metadata=True)
RequestTimedOutError = _err(7, "REQUEST_TIMED_OUT", retriable=True, definite=False)
BrokerNotAvailableError = _err(8, "BROKER_NOT_AVAILABLE")
ReplicaNotAvailableError = _err(9, "REPLICA_NOT_AVAILABLE", retriable=True, invalid_metadata=True)
MessageTooLargeError = _err(10, "MESSAGE_TOO_LARGE")
NetworkExceptionError = _err(13, "NETWORK_EXCEPTION", retriable=True, invalid_metadata=True, definite=False)
CoordinatorLoadInProgressError = _err(14, "COORDINATOR_LOAD_IN_PROGRESS", retriable=True)
CoordinatorNotAvailableError = _err(15, "COORDINATOR_NOT_AVAILABLE", retriable=True)
NotCoordinatorError = _err(16, "NOT_COORDINATOR", retriable=True)
InvalidTopicError = _err(17, "INVALID_TOPIC_EXCEPTION")
RecordListTooLargeError = _err(18, "RECORD_LIST_TOO_LARGE")
NotEnoughReplicasError = _err(19, "NOT_ENOUGH_REPLICAS", retriable=True)
NotEnoughReplicasAfterAppendError = _err(20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", retriable=True, definite=False)
InvalidRequiredAcksError = _err(21, "INVALID_REQUIRED_ACKS")
IllegalGenerationError = _err(22, "ILLEGAL_GENERATION")
InconsistentGroupProtocolError = _err(23, "INCONSISTENT_GROUP_PROTOCOL")
InvalidGroupIdError = _err(24, "INVALID_GROUP_ID")
UnknownMemberIdError = _err(25, "UNKNOWN_MEMBER_ID")
InvalidSessionTimeoutError = _err(26, "INVALID_SESSION_TIMEOUT")
RebalanceInProgressError = _err(27, "REBALANCE_IN_PROGRESS")
InvalidCommitOffsetSizeError = _err(28, "INVALID_COMMIT_OFFSET_SIZE")
TopicAuthorizationFailedError = _err(29, "TOPIC_AUTHORIZATION_FAILED")
GroupAuthorizationFailedError = _err(30, "GROUP_AUTHORIZATION_FAILED")
ClusterAuthorizationFailedError = _err(31, "CLUSTER_AUTHORIZATION_FAILED")
UnsupportedSaslMechanismError = _err(33, "UNSUPPORTED_SASL_MECHANISM")
IllegalSaslStateError = _err(34, "ILLEGAL_SASL_STATE")
InvalidTimestampError = _err(32, "INVALID_TIMESTAMP")
UnsupportedVersionError = _err(35, "UNSUPPORTED_VERSION")
TopicAlreadyExistsError = _err(36, "TOPIC_ALREADY_EXISTS")
InvalidPartitionsError = _err(37, "INVALID_PARTITIONS")
InvalidReplicationFactorError = _err(38, "INVALID_REPLICATION_FACTOR")
InvalidReplicaAssignmentError = _err(39, "INVALID_REPLICA_ASSIGNMENT")
InvalidConfigError = _err(40, "INVALID_CONFIG")
NotControllerError = _err(41, "NOT_CONTROLLER", retriable=True)
InvalidRequestError = _err(42, "INVALID_REQUEST")
PolicyViolationError = _err(44, "POLICY_VIOLATION")
OutOfOrderSequenceNumberError = _err(45, "OUT_OF_ORDER_SEQUENCE_NUMBER")
DuplicateSequenceNumberError = _err(46, "DUPLICATE_SEQUENCE_NUMBER")
InvalidProducerEpochError = _err(47, "INVALID_PRODUCER_EPOCH")
InvalidTxnStateError = _err(48, "INVALID_TXN_STATE")
InvalidProducerIdMappingError = _err(49, "INVALID_PRODUCER_ID_MAPPING")
InvalidTransactionTimeoutError = _err(50, "INVALID_TRANSACTION_TIMEOUT")
ConcurrentTransactionsError = _err(51, "CONCURRENT_TRANSACTIONS", retriable=True)
TransactionCoordinatorFencedError = _err(52, "TRANSACTION_COORDINATOR_FENCED")
TransactionalIdAuthorizationFailedError = _err(53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED")
SecurityDisabledError = _err(54, "SECURITY_DISABLED")
OperationNotAttemptedError = _err(55, "OPERATION_NOT_ATTEMPTED")
SaslAuthenticationFailedError = _err(58, "SASL_AUTHENTICATION_FAILED")
KafkaStorageError = _err(56, "KAFKA_STORAGE_ERROR", retriable=True, invalid_metadata=True)
LogDirNotFoundError = _err(57, "LOG_DIR_NOT_FOUND")
UnknownProducerIdError = _err(59, "UNKNOWN_PRODUCER_ID")
NonEmptyGroupError = _err(68, "NON_EMPTY_GROUP")
GroupIdNotFoundError = _err(69, "GROUP_ID_NOT_FOUND")
FencedLeaderEpochError = _err(74, "FENCED_LEADER_EPOCH", retriable=True, invalid_metadata=True)
UnknownLeaderEpochError = _err(75, "UNKNOWN_LEADER_EPOCH", retriable=True)
StaleBrokerEpochError = _err(77, "STALE_BROKER_EPOCH")
OffsetNotAvailableError = _err(78, "OFFSET_NOT_AVAILABLE", retriable=True)
MemberIdRequiredError = _err(79, "MEMBER_ID_REQUIRED")
PreferredLeaderNotAvailableError = _err(80, "PREFERRED_LEADER_NOT_AVAILABLE", retriable=True, invalid_metadata=True)
GroupMaxSizeReachedError = _err(81, "GROUP_MAX_SIZE_REACHED")
FencedInstanceIdError = _err(82, "FENCED_INSTANCE_ID")
EligibleLeadersNotAvailableError = _err(83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", retriable=True)
ElectionNotNeededError = _err(84, "ELECTION_NOT_NEEDED", retriable=True)
NoReassignmentInProgressError = _err(85, "NO_REASSIGNMENT_IN_PROGRESS")
GroupSubscribedToTopicError = _err(86, "GROUP_SUBSCRIBED_TO_TOPIC")
InvalidRecordError = _err(87, "INVALID_RECORD")
UnstableOffsetCommitError = _err(88, "UNSTABLE_OFFSET_COMMIT", retriable=True)
ThrottlingQuotaExceededError = _err(89, "THROTTLING_QUOTA_EXCEEDED", retriable=True)
ProducerFencedError = _err(90, "PRODUCER_FENCED")
ResourceNotFoundError = _err(91, "RESOURCE_NOT_FOUND")
UnacceptableCredentialError = _err(93, "UNACCEPTABLE_CREDENTIAL")
InvalidUpdateVersionError = _err(95, "INVALID_UPDATE_VERSION")
UnknownTopicIdError = _err(100, "UNKNOWN_TOPIC_ID", retriable=True, invalid_metadata=True)
IneligibleReplicaError = _err(107, "INELIGIBLE_REPLICA")
FencedMemberEpochError = _err(110, "FENCED_MEMBER_EPOCH")
TransactionalIdNotFoundError = _err(105, "TRANSACTIONAL_ID_NOT_FOUND")
TransactionAbortableError = _err(120, "TRANSACTION_ABORTABLE")


# Client-side errors: not on the wire, but carried with the same flags so
# the runner can decide fail vs info from `definite`.
class KafkaTimeoutError(KafkaError):
    code = -100
    name = "timeout"
    retriable = True
    definite = False


class KafkaConnectionError(KafkaError):
    code = -101
    name = "connection"
    retriable = True
    invalid_metadata = True
    definite = False


class BufferExhaustedError(KafkaError):
    """send() waited max.block.ms for buffer.memory to free up."""
    code = -102
    name = "BUFFER_EXHAUSTED"
    retriable = False
    definite = True


class ConfigError(KafkaError, ValueError):
    """A config key is unknown or its value is invalid; the message names the key."""
    code = -103
    name = "CONFIG_ERROR"


class NoOffsetForPartitionError(KafkaError):
    code = -104
    name = "NO_OFFSET_FOR_PARTITION"


class IllegalStateError(KafkaError):
    code = -105
    name = "ILLEGAL_STATE"


class TransactionAbortedError(KafkaError):
    """Kafka's TransactionAbortedException: the record was not sent because its transaction aborted."""
    code = -106
    name = "TRANSACTION_ABORTED"


def for_code(code: int, message: str = "") -> KafkaError:
    """The exception for a wire error code; unknown codes keep their number."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return UnknownServerError(message or f"unknown error code {code}", code=code)
    return cls(message)


def class_for_code(code: int) -> type[KafkaError]:
    return _BY_CODE.get(code, UnknownServerError)


def class_for_name(name: str) -> type[KafkaError] | None:
    return _BY_NAME.get(name)


def all_errors() -> list[type[KafkaError]]:
    return sorted(_BY_CODE.values(), key=lambda c: c.code)


NONE = 0
