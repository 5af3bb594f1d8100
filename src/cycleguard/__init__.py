"""cycleguard: a typed budget guard for LLM calls, on asyncio and trio.

Reserve an estimate before a model call, commit the real usage after it,
release on failure; every call returns a ``returns`` ``Result`` whose error
side is a closed union (:mod:`cycleguard.errors`).
"""

from __future__ import annotations

from cycleguard._client import CyclesClient as CyclesClient
from cycleguard._client import new_idempotency_key as new_idempotency_key
from cycleguard._config import ClientConfig as ClientConfig
from cycleguard._core._http import Timeouts as Timeouts
from cycleguard._core._json import JsonObject as JsonObject
from cycleguard._core._json import JsonValue as JsonValue
from cycleguard._core._models import Action as Action
from cycleguard._core._models import Amount as Amount
from cycleguard._core._models import Balance as Balance
from cycleguard._core._models import BalanceResponse as BalanceResponse
from cycleguard._core._models import Caps as Caps
from cycleguard._core._models import CommitRequest as CommitRequest
from cycleguard._core._models import CommitResponse as CommitResponse
from cycleguard._core._models import Decision as Decision
from cycleguard._core._models import DecisionRequest as DecisionRequest
from cycleguard._core._models import DecisionResponse as DecisionResponse
from cycleguard._core._models import ErrorResponse as ErrorResponse
from cycleguard._core._models import EventCreateRequest as EventCreateRequest
from cycleguard._core._models import EventCreateResponse as EventCreateResponse
from cycleguard._core._models import EvidenceRef as EvidenceRef
from cycleguard._core._models import OveragePolicy as OveragePolicy
from cycleguard._core._models import ReasonCode as ReasonCode
from cycleguard._core._models import ReleaseRequest as ReleaseRequest
from cycleguard._core._models import ReleaseResponse as ReleaseResponse
from cycleguard._core._models import Reservation as Reservation
from cycleguard._core._models import ReservationCreateRequest as ReservationCreateRequest
from cycleguard._core._models import ReservationCreateResponse as ReservationCreateResponse
from cycleguard._core._models import ReservationDetail as ReservationDetail
from cycleguard._core._models import ReservationEvidence as ReservationEvidence
from cycleguard._core._models import ReservationExtendRequest as ReservationExtendRequest
from cycleguard._core._models import ReservationExtendResponse as ReservationExtendResponse
from cycleguard._core._models import ReservationListResponse as ReservationListResponse
from cycleguard._core._models import ReservationStatus as ReservationStatus
from cycleguard._core._models import ReservationSummary as ReservationSummary
from cycleguard._core._models import ResponseMeta as ResponseMeta
from cycleguard._core._models import SignedAmount as SignedAmount
from cycleguard._core._models import SortBy as SortBy
from cycleguard._core._models import SortDirection as SortDirection
from cycleguard._core._models import StandardMetrics as StandardMetrics
from cycleguard._core._models import Subject as Subject
from cycleguard._core._models import Unit as Unit
from cycleguard._core._models import UnknownReasonCode as UnknownReasonCode
from cycleguard._core._models import UnknownReservationStatus as UnknownReservationStatus
from cycleguard._core._state import LeaseState as LeaseState
from cycleguard._guarded import Spent as Spent
from cycleguard._guarded import guarded as guarded
from cycleguard._heartbeat import HeartbeatEvent as HeartbeatEvent
from cycleguard._heartbeat import HeartbeatExtended as HeartbeatExtended
from cycleguard._heartbeat import HeartbeatRetrying as HeartbeatRetrying
from cycleguard._heartbeat import HeartbeatStopped as HeartbeatStopped
from cycleguard._journal import JournalConfig as JournalConfig
from cycleguard._lease import AlreadyFinalized as AlreadyFinalized
from cycleguard._lease import Lease as Lease
from cycleguard._lease import LeaseLost as LeaseLost
from cycleguard._lease import open_reservation as open_reservation
from cycleguard._settlement import Committed as Committed
from cycleguard._settlement import DrainReport as DrainReport
from cycleguard._settlement import Pending as Pending
from cycleguard._settlement import RecoveredViaEvent as RecoveredViaEvent
from cycleguard._settlement import Rejected as Rejected
from cycleguard._settlement import ReplayReport as ReplayReport
from cycleguard._settlement import Settlement as Settlement
from cycleguard._settlement import SettlementOutcome as SettlementOutcome
from cycleguard._settlement import SettlementPolicy as SettlementPolicy
from cycleguard._version import package_version as _package_version

__version__ = _package_version()

__all__ = (
    "CyclesClient",
    "open_reservation",
    "Lease",
    "LeaseState",
    "LeaseLost",
    "AlreadyFinalized",
    "guarded",
    "Spent",
    "HeartbeatEvent",
    "HeartbeatExtended",
    "HeartbeatRetrying",
    "HeartbeatStopped",
    "Settlement",
    "SettlementPolicy",
    "SettlementOutcome",
    "Committed",
    "RecoveredViaEvent",
    "Pending",
    "Rejected",
    "ReplayReport",
    "DrainReport",
    "JournalConfig",
    "ClientConfig",
    "Timeouts",
    "new_idempotency_key",
    "Action",
    "Amount",
    "SignedAmount",
    "Unit",
    "Subject",
    "Caps",
    "Decision",
    "ReasonCode",
    "UnknownReasonCode",
    "OveragePolicy",
    "ReservationStatus",
    "UnknownReservationStatus",
    "StandardMetrics",
    "Balance",
    "EvidenceRef",
    "ReservationEvidence",
    "ResponseMeta",
    "JsonObject",
    "JsonValue",
    "SortBy",
    "SortDirection",
    "DecisionRequest",
    "DecisionResponse",
    "ReservationCreateRequest",
    "ReservationCreateResponse",
    "Reservation",
    "ReservationDetail",
    "ReservationSummary",
    "ReservationListResponse",
    "CommitRequest",
    "CommitResponse",
    "ReleaseRequest",
    "ReleaseResponse",
    "ReservationExtendRequest",
    "ReservationExtendResponse",
    "BalanceResponse",
    "EventCreateRequest",
    "EventCreateResponse",
    "ErrorResponse",
)
