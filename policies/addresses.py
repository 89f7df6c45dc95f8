"""Ethereum addresses, accepted only with a valid EIP-55 checksum."""

from __future__ import annotations

import re

from eth_utils.address import to_checksum_address

from policies.errors import AddressError

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")


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
