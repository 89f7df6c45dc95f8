"""Where requests may come from: the source networks the policy allows each API key (``KeyRule.sources``), and
which address a request came from when reverse proxies sit in front of the API.

The client's address (``client_address``) is the direct peer, unless the peer is one of the configured trusted
proxies (``[api] trusted_proxies``). Then X-Forwarded-For is read from the right, skipping trusted proxies, and
the first address that is not one is the client: what lies to its left was written by the client itself or by
proxies nobody vouches for, so it proves nothing. If every entry is a trusted proxy the leftmost is the client;
with no entry at all, the peer is. An entry that is not an IP address ends the walk with no address, which no
network contains.

A key whose policy entry lists sources may call only from them. A request from elsewhere is refused with
``source_not_allowed`` once its signature has verified (so only the key's holder can cause the refusal), and
recorded in the audit log as ``request.source_not_allowed`` (hence sent as a webhook) in the transaction that
records its nonce: the same signed request sent again is refused as a replay, and recorded once.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from custody.errors import NoActivePolicy, SourceNotAllowed, Unauthorized
from custody.intake.apikeys import Seen, replayed
from custody.ledger import audit
from custody.ledger.policy import PolicyCache
from custody.store.db import Store
from policies.errors import CustodyError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Remember = Callable[[Session, list[Seen]], list[Unauthorized | None]]
REFUSED = "request.source_not_allowed"
# How long the networks read from the active policy are used before the policy is read again: a bundle that
# changes a key's sources takes effect on each replica within this many seconds of being applied.
TTL = 1.0


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


def parse_address(text: str) -> Address | None:
    """An IP address as a peer or an X-Forwarded-For entry spells it (``1.2.3.4``, ``1.2.3.4:5678``,
    ``2001:db8::1``, ``[2001:db8::1]:443``); an IPv4-mapped IPv6 address is its IPv4 address. None if it is
    not an address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def client_address(peer: str | None, forwarded: Sequence[str], trusted: Sequence[Network]) -> Address | None:
    """The client's address, given the direct ``peer``, the X-Forwarded-For header values in the order they
    came (each a comma-separated list) and the trusted proxies' networks; None when it is not known."""
    direct = parse_address(peer) if peer else None
    if direct is None or not _within(direct, trusted):
        return direct
    hops = [h for value in forwarded for h in value.split(",") if h.strip()]
    if not hops:
        return direct
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None or not _within(address, trusted):
            return address
    return parse_address(hops[0])


def allowed(address: Address | None, networks: Sequence[Network]) -> bool:
    """Whether a key limited to ``networks`` (none: no limit) may call from ``address``."""
    return not networks or (address is not None and _within(address, networks))


class Sources:
    """The policy's source networks per key, read from the active policy at most once per ``TTL``; with no
    active policy, no key is limited (nothing can be paid then anyway)."""

    def __init__(self, store: Store, policies: PolicyCache, remember: Remember) -> None:
        self.store, self.policies, self.remember = store, policies, remember
        self._read_at = -TTL
        self._version = -1
        self._networks: Mapping[str, tuple[Network, ...]] = {}
        self._lock = threading.Lock()

    def networks(self, key: str) -> tuple[Network, ...]:
        """The networks ``key`` may call from (empty: anywhere), from the policy as read last."""
        return self._networks.get(key, ())

    def refresh(self) -> None:
        """Read the active policy again (its version is one cheap query; it is parsed once per version)."""
        with self._lock:
            if time.monotonic() - self._read_at < TTL:
                return
            try:
                with self.store.read() as s:
                    active = self.policies.get(s)
            except NoActivePolicy:
                self._version, self._networks = 0, {}
            else:
                if active.version != self._version:
                    rules = active.policy.api_keys.items()
                    self._networks = {name: parse_networks(rule.sources) for name, rule in rules if rule.sources}
                    self._version = active.version
            self._read_at = time.monotonic()

    async def check(self, seen: Seen, address: Address | None, method: str, target: str) -> None:
        """Refuse (and record) a request whose key may not call from ``address``; from the event loop, reading
        the database off it and only when the policy is due to be read again or the request is refused."""
        if time.monotonic() - self._read_at >= TTL:
            await run_in_threadpool(self.refresh)
        if allowed(address, self.networks(seen.principal.name)):
            return
        raise await run_in_threadpool(self.refuse, seen, address, method, target)

    def refuse(self, seen: Seen, address: Address | None, method: str, target: str) -> CustodyError:
        """Record the refusal and the request's nonce in one transaction; the error to answer with (a replay
        of a request refused before is answered as a replay, and not recorded again)."""
        name = seen.principal.name
        where = "an unknown address" if address is None else str(address)
        try:
            with self.store.transaction() as s:
                verdict = self.remember(s, [seen])[0]
                if verdict is not None:
                    return verdict
                data = {"key": name, "address": None if address is None else str(address), "method": method}
                audit.append(s, seen.now, REFUSED, name, data | {"path": target})
        except IntegrityError:  # another replica recorded this very request at the same moment
            return replayed()
        return SourceNotAllowed(f"API key {name!r} may not be used from {where}")
