"""An operator's signed decision on a held withdrawal (four eyes), as the daemon stores it and a cold batch
carries it; defined here so the daemon and the signers check the same bytes.

The operator signs, with the Ed25519 key the quorum-signed policy gives them (``[[operators]]``):

    b"custody-review-v1\\x00" ‖ canonical JSON {"kind": "custody-review-decision", "withdrawal": "<uuid>",
                                               "decision": "approve" | "reject", "reason": "<text>",
                                               "at": <unix s>}

Two approvals by distinct operators release a held withdrawal; one rejection rejects it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.signing import SigningKey

from policies.canonical import canonical_bytes
from signer.apirequest import verify_signature

DOMAIN = b"custody-review-v1\x00"
KIND = "custody-review-decision"
APPROVE, REJECT = "approve", "reject"
MAX_REASON = 1000


def decision_message(withdrawal: str, decision: str, reason: str, at: int) -> bytes:
    """The bytes an operator signs for one decision."""
    return DOMAIN + canonical_bytes(
        {"kind": KIND, "withdrawal": withdrawal, "decision": decision, "reason": reason, "at": at}
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """One operator's decision on one withdrawal (the withdrawal id is the batch withdrawal's own)."""

    operator: str  # the operator's name in the policy
    decision: str
    reason: str
    at: int
    signature: bytes  # 64 bytes

    def verifies(self, withdrawal: str, public_key_hex: str) -> bool:
        return verify_signature(
            public_key_hex, decision_message(withdrawal, self.decision, self.reason, self.at), self.signature
        )

    def to_json(self) -> dict[str, object]:
        return {
            "operator": self.operator,
            "decision": self.decision,
            "reason": self.reason,
            "at": self.at,
            "signature": self.signature.hex(),
        }


def sign_decision(key: SigningKey, operator: str, withdrawal: str, decision: str, reason: str, at: int) -> Decision:
    return Decision(
        operator, decision, reason, at, key.sign(decision_message(withdrawal, decision, reason, at)).signature
    )
