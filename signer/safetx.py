"""Safe 1.4.1 transactions from nothing but explicit arguments: calldata, the SafeTx hash, owner signatures.

Every value that goes into the hash is a parameter; nothing is looked up from a node (the signer has none).

Calldata (ABI encoding; every word is 32 bytes, big-endian):

    ERC-20 transfer     0xa9059cbb ‖ to (left-padded) ‖ amount
    MultiSendCallOnly   0x8d80ff0a ‖ 0x20 ‖ len(packed) ‖ packed, zero-padded to a whole word
        packed = for each call: operation (1 byte, always 0 = CALL) ‖ to (20 bytes) ‖ value (32 bytes)
                 ‖ len(data) (32 bytes) ‖ data

SafeTx hash (EIP-712, exactly as Safe 1.4.1's ``getTransactionHash``):

    domain_separator = keccak(DOMAIN_TYPEHASH ‖ chain_id ‖ safe)
    struct_hash      = keccak(SAFE_TX_TYPEHASH ‖ to ‖ value ‖ keccak(data) ‖ operation ‖ safe_tx_gas ‖ base_gas
                              ‖ gas_price ‖ gas_token ‖ refund_receiver ‖ nonce)
    safe_tx_hash     = keccak(0x19 ‖ 0x01 ‖ domain_separator ‖ struct_hash)

An owner's signature is a plain secp256k1 signature of that hash: r ‖ s ‖ v with v in {27, 28}. The Safe
wants its owners' signatures concatenated in ascending order of owner address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import coincurve
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

CALL, DELEGATECALL = 0, 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DOMAIN_TYPEHASH = keccak(b"EIP712Domain(uint256 chainId,address verifyingContract)")
SAFE_TX_TYPEHASH = keccak(
    b"SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,uint256 baseGas,"
    b"uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)"
)
TRANSFER_SELECTOR = keccak(b"transfer(address,uint256)")[:4]
MULTISEND_SELECTOR = keccak(b"multiSend(bytes)")[:4]
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class SignatureInvalid(ValueError):
    """Not a valid 65-byte owner signature (callers wrap this in their own error type)."""


def word(value: int) -> bytes:
    if not 0 <= value < 2**256:
        raise ValueError(f"{value} does not fit in a uint256")
    return value.to_bytes(32, "big")


def address_word(address: str) -> bytes:
    return bytes(12) + address_bytes(address)


def address_bytes(address: str) -> bytes:
    raw = bytes.fromhex(address.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"{address} is not a 20-byte address")
    return raw


class Call(NamedTuple):
    """One plain call (operation CALL) the Safe makes."""

    to: str
    value: int
    data: bytes


def transfer_call(token: str | None, to: str, amount: int) -> Call:
    """A payment: a plain value transfer of the native coin, or ERC-20 ``transfer(to, amount)`` on ``token``."""
    if token is None:
        return Call(to, amount, b"")
    return Call(token, 0, TRANSFER_SELECTOR + address_word(to) + word(amount))


def multisend_data(calls: list[Call]) -> bytes:
    packed = b"".join(bytes([CALL]) + address_bytes(c.to) + word(c.value) + word(len(c.data)) + c.data for c in calls)
    padding = bytes(-len(packed) % 32)
    return MULTISEND_SELECTOR + word(32) + word(len(packed)) + packed + padding


@dataclass(frozen=True, slots=True)
class SafeTx:
    """The fields the owners sign. Gas refunds are never used: safe_tx_gas, base_gas and gas_price are 0,
    which also makes ``execTransaction`` revert as a whole if the inner call fails."""

    to: str
    value: int
    data: bytes
    operation: int
    nonce: int
    safe_tx_gas: int = 0
    base_gas: int = 0
    gas_price: int = 0
    gas_token: str = ZERO_ADDRESS
    refund_receiver: str = ZERO_ADDRESS


def build_safe_tx(calls: list[Call], safe: str, nonce: int, multisend: str) -> SafeTx:
    """The one SafeTx for a batch: nothing (a no-op call to the Safe itself, which only uses up the nonce),
    a single call, or several through MultiSendCallOnly by delegatecall."""
    if not calls:
        return SafeTx(to=safe, value=0, data=b"", operation=CALL, nonce=nonce)
    if len(calls) == 1:
        (only,) = calls
        return SafeTx(to=only.to, value=only.value, data=only.data, operation=CALL, nonce=nonce)
    return SafeTx(to=multisend, value=0, data=multisend_data(calls), operation=DELEGATECALL, nonce=nonce)


def domain_separator(chain_id: int, safe: str) -> bytes:
    return keccak(DOMAIN_TYPEHASH + word(chain_id) + address_word(safe))


def safe_tx_hash(chain_id: int, safe: str, tx: SafeTx) -> bytes:
    struct = keccak(
        SAFE_TX_TYPEHASH
        + address_word(tx.to)
        + word(tx.value)
        + keccak(tx.data)
        + word(tx.operation)
        + word(tx.safe_tx_gas)
        + word(tx.base_gas)
        + word(tx.gas_price)
        + address_word(tx.gas_token)
        + address_word(tx.refund_receiver)
        + word(tx.nonce)
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, safe) + struct)


SAFE_MSG_TYPEHASH = keccak(b"SafeMessage(bytes message)")


def safe_message_hash(chain_id: int, safe: str, data_hash: bytes) -> bytes:
    """What the owners sign so that the Safe answers EIP-1271 ``isValidSignature(data_hash, signatures)``
    (Safe 1.4.1's CompatibilityFallbackHandler, bytes32 form: the message is the 32 bytes of ``data_hash``):
    keccak(0x19 ‖ 0x01 ‖ domain_separator ‖ keccak(SAFE_MSG_TYPEHASH ‖ keccak(data_hash)))."""
    struct = keccak(SAFE_MSG_TYPEHASH + keccak(data_hash))
    return keccak(b"\x19\x01" + domain_separator(chain_id, safe) + struct)


def sign_hash(private_key: bytes, digest: bytes) -> bytes:
    """r ‖ s ‖ v (v = 27 or 28) over a 32-byte digest; libsecp256k1 always gives the low-s form."""
    raw = coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def recover_owner(digest: bytes, signature: bytes) -> str:
    """The checksummed address that made ``signature`` over ``digest``; refuses malleable (high-s) forms."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise SignatureInvalid("an owner signature is 65 bytes, r ‖ s ‖ v with v 27 or 28")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < s <= SECP256K1_N // 2:
        raise SignatureInvalid("the signature is not in low-s form")
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
        )
    except Exception:  # coincurve raises its own bare exceptions for unrecoverable input
        raise SignatureInvalid("no public key can be recovered from this signature") from None
    return to_checksum_address(keccak(public.format(compressed=False)[1:])[-20:])


def pack_signatures(signatures: dict[str, bytes]) -> bytes:
    """Owner signatures in the order the Safe checks them: ascending owner address."""
    return b"".join(signatures[owner] for owner in sorted(signatures, key=lambda a: int(a, 16)))


class InnerCall(NamedTuple):
    """One call as the Safe will make it, read back from the bytes that are signed (for the review screen)."""

    operation: int
    to: str
    value: int
    data: bytes


def inner_calls(tx: SafeTx, multisend: str) -> list[InnerCall]:
    """What ``tx`` makes the Safe do: the calls packed in a MultiSendCallOnly delegatecall, or the one call.
    Only for display after the SafeTx was checked against its rebuild; malformed bytes raise ValueError."""
    if tx.operation != DELEGATECALL or tx.to != multisend:
        return [InnerCall(tx.operation, tx.to, tx.value, tx.data)]
    if tx.data[:4] != MULTISEND_SELECTOR or len(tx.data) < 68:
        raise ValueError("not a multiSend(bytes) call")
    size = int.from_bytes(tx.data[36:68], "big")
    packed, calls, at = tx.data[68 : 68 + size], [], 0
    while at < len(packed):
        operation, to = packed[at], to_checksum_address(packed[at + 1 : at + 21])
        value = int.from_bytes(packed[at + 21 : at + 53], "big")
        length = int.from_bytes(packed[at + 53 : at + 85], "big")
        calls.append(InnerCall(operation, to, value, packed[at + 85 : at + 85 + length]))
        at += 85 + length
    return calls


def decode_transfer(data: bytes) -> tuple[str, int] | None:
    """(recipient, amount) of an ERC-20 ``transfer`` call's data, or None if it is not one."""
    if len(data) != 68 or data[:4] != TRANSFER_SELECTOR or any(data[4:16]):
        return None
    return to_checksum_address(data[16:36]), int.from_bytes(data[36:68], "big")
