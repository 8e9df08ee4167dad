"""Pure decisions about mail: no I/O, no storage; values in, verdicts out."""

from mailcase.policy.recipients import Accept, AddressRule, Reject, decide_recipient

__all__ = ["Accept", "AddressRule", "Reject", "decide_recipient"]
