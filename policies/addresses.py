"""Destination addresses, per chain, reduced to one canonical text so that comparisons are plain equality.

Ethereum: accepted only with a valid EIP-55 checksum (the checksummed text is the canonical form).
Bitcoin: segwit v0 (P2WPKH, P2WSH) in bech32 and v1 (P2TR) in bech32m, lowercase; legacy P2PKH and P2SH
in base58check. Any other witness version or program length is refused: no wallet spends it today, so
coins sent there are lost, and an exchange has no reason to pay to one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from embit import base58, bech32
from eth_utils.address import to_checksum_address

from policies.errors import AddressError, AddressWrongChain

CHAINS = ("ethereum", "bitcoin")
NETWORKS = ("mainnet", "testnet", "signet", "regtest")

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")
_HRP = {"mainnet": "bc", "testnet": "tb", "signet": "tb", "regtest": "bcrt"}
_HRP_NETWORK = {"bc": "mainnet", "tb": "testnet or signet", "bcrt": "regtest"}
# base58check version bytes: (P2PKH, P2SH); testnet, signet and regtest share theirs.
_B58 = {"mainnet": (0x00, 0x05), "testnet": (0x6F, 0xC4), "signet": (0x6F, 0xC4), "regtest": (0x6F, 0xC4)}
_B58_NETWORK = {
    0x00: "mainnet",
    0x05: "mainnet",
    0x6F: "testnet, signet or regtest",
    0xC4: "testnet, signet or regtest",
}
_MAX_LENGTH = 90  # the longest bech32 string; a base58 address is at most 35


def checksum_address(text: object) -> str:
    """Return ``text`` if it is a 0x-prefixed address with a correct EIP-55 checksum.

    An all-lowercase or all-uppercase address carries no checksum, so a typo in it would go unnoticed:
    it is refused too, with the checksummed form in the message so the caller can fix the source.
    """
    if not isinstance(text, str) or _HEX40.fullmatch(text) is None:
        raise AddressError(f"{str(text)[:60]!r} is not an Ethereum address (0x and 40 hex digits)")
    expected = to_checksum_address(text)
    if text != expected:
        body = text[2:]
        if body == body.lower() or body == body.upper():
            raise AddressError(f"address {text} has no EIP-55 checksum; write it as {expected}")
        raise AddressError(f"address {text} has a wrong EIP-55 checksum")
    return text


def destination(chain: str, network: str | None, text: object) -> str:
    """The canonical form of ``text`` as an address on ``chain`` (and ``network``, for Bitcoin)."""
    if chain == "ethereum":
        if network is not None:
            raise AddressError(f"an Ethereum address has no network (got {network!r})")
        if isinstance(text, str) and _HEX40.fullmatch(text) is None and _is_bitcoin(text):
            raise AddressWrongChain(f"{text!r} is a Bitcoin address, not an Ethereum one")
        return checksum_address(text)
    if chain == "bitcoin":
        if network not in NETWORKS:
            raise AddressError(f"unknown Bitcoin network {network!r}; expected one of {', '.join(NETWORKS)}")
        if isinstance(text, str) and _HEX40.fullmatch(text) is not None:
            raise AddressWrongChain(f"{text!r} is an Ethereum address, not a Bitcoin one")
        return _bitcoin(network, text).address
    raise AddressError(f"unknown chain {chain!r}; expected one of {', '.join(CHAINS)}")


def bitcoin_script(network: str, address: str) -> bytes:
    """The scriptPubKey that ``address`` (already canonical, for ``network``) pays to."""
    if network not in NETWORKS:
        raise AddressError(f"unknown Bitcoin network {network!r}; expected one of {', '.join(NETWORKS)}")
    parsed = _bitcoin(network, address)
    if parsed.address != address:
        raise AddressError(f"{address!r} is not in canonical form; write it as {parsed.address}")
    return parsed.script


def _is_bitcoin(text: str) -> bool:
    for network in NETWORKS:
        try:
            _bitcoin(network, text)
        except AddressWrongChain:
            continue
        except AddressError:
            return False
        return True
    return False


@dataclass(frozen=True)
class _Parsed:
    address: str
    script: bytes


def _bitcoin(network: str, text: object) -> _Parsed:
    if not isinstance(text, str) or not text or len(text) > _MAX_LENGTH or not text.isascii() or not text.isprintable():
        raise AddressError(f"{str(text)[:60]!r} is not a Bitcoin address")
    if text.lower().startswith(tuple(hrp + "1" for hrp in _HRP_NETWORK)):
        return _segwit(network, text)
    if any(c not in base58.B58_DIGITS for c in text):
        hrp = bech32.bech32_decode(text)[1]
        if hrp is not None:
            raise AddressError(f"{text!r} has the prefix {hrp!r}, which is not a Bitcoin network's")
        raise AddressError(f"{text!r} is not a Bitcoin address (neither bech32 nor base58)")
    return _legacy(network, text)


def _segwit(network: str, text: str) -> _Parsed:
    if text != text.lower() and text != text.upper():
        raise AddressError(f"{text!r} mixes upper and lower case; a bech32 address is all one case")
    encoding, hrp, data = bech32.bech32_decode(text)
    if encoding is None or hrp is None or data is None:
        raise AddressError(f"{text!r} is not a valid bech32 address (bad checksum or character)")
    if hrp not in _HRP_NETWORK:
        raise AddressError(f"{text!r} is not a valid bech32 address")
    if not data:
        raise AddressError(f"{text!r} has no witness version")
    version = data[0]
    program = bech32.convertbits(data[1:], 5, 8, False)
    if program is None:
        raise AddressError(f"{text!r} has an invalid witness program (padding)")
    if version == 0:
        if encoding != bech32.Encoding.BECH32:
            raise AddressError(f"{text!r} is segwit v0 with a bech32m checksum; v0 uses bech32 (BIP-173)")
        if len(program) not in (20, 32):
            raise AddressError(f"{text!r} is segwit v0 with a {len(program)}-byte program; only 20 or 32 exist")
    elif version == 1:
        if encoding != bech32.Encoding.BECH32M:
            raise AddressError(
                f"{text!r} is segwit v1 with a bech32 checksum, not bech32m (BIP-350): coins sent there could be lost"
            )
        if len(program) != 32:
            raise AddressError(
                f"{text!r} is segwit v1 with a {len(program)}-byte program; only taproot's 32 is spendable"
            )
    else:
        raise AddressError(
            f"{text!r} is segwit v{version}, which no wallet can spend yet: coins sent there could be lost"
        )
    canonical = bech32.encode(hrp, version, program)
    if canonical != text.lower():  # the decoder and the encoder must agree, or something above is wrong
        raise AddressError(f"{text!r} is not a valid bech32 address")
    if hrp != _HRP[network]:  # checked last: an address that is invalid everywhere is told so
        raise AddressWrongChain(f"{text!r} is a {_HRP_NETWORK[hrp]} address, not a {network} one")
    opcode = 0x00 if version == 0 else 0x50 + version
    return _Parsed(canonical, bytes([opcode, len(program)]) + bytes(program))


def _legacy(network: str, text: str) -> _Parsed:
    try:
        payload = base58.decode_check(text)
    except ValueError:
        raise AddressError(f"{text!r} is not a valid base58check address (bad checksum)") from None
    if len(payload) != 21 or base58.encode_check(payload) != text:
        raise AddressError(f"{text!r} is not a Bitcoin address (wrong length for P2PKH or P2SH)")
    version, digest = payload[0], payload[1:]
    p2pkh, p2sh = _B58[network]
    if version == p2pkh:
        return _Parsed(text, b"\x76\xa9\x14" + digest + b"\x88\xac")
    if version == p2sh:
        return _Parsed(text, b"\xa9\x14" + digest + b"\x87")
    if version in _B58_NETWORK:
        raise AddressWrongChain(f"{text!r} is a {_B58_NETWORK[version]} address, not a {network} one")
    raise AddressError(f"{text!r} is not a Bitcoin address (unknown version byte {version:#04x})")
