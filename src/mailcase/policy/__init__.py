"""Pure decisions about mail: no I/O, no storage; values in, verdicts out."""

from mailcase.policy.recipients import Accept, AddressRule, Reject, decide_recipient
from mailcase.policy.rejections import RejectionSummary, RejectionTally

__all__ = [
    "Accept",
    "AddressRule",
    "Reject",
    "RejectionSummary",
    "RejectionTally",
    "decide_recipient",
]
