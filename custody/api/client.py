"""The Python client the exchange backend imports. Every request is signed (see ``custody.intake.signatures``).

Retries: creating a withdrawal and every read ride out an outage of the daemon or its database. A request
whose answer never arrived, or that was answered 502, 503 (but ``no_active_policy``, which waiting does not
fix) or 504, is sent again, freshly signed (a new timestamp and nonce) with the same ``Idempotency-Key``, after
a jittered exponential backoff (0.1 s doubling to 3 s, each wait between half and all of that, and never less
than the server's ``Retry-After``), until ``retry_budget`` seconds have passed since the first attempt: the
default, 60 s, outlasts a database restart. Cancelling is not retried: a second attempt after a lost answer
would be refused as not cancellable. Nor are adding and removing an address-book entry (a second attempt would
be refused with ``address_exists`` or ``not_found``: read the book instead); setting a customer's mode is, as
setting it twice is harmless.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from nacl.signing import SigningKey

from custody.intake.signatures import sign_request


class CustodyAPIError(Exception):
    """A problem-details answer from the daemon; ``code`` is stable, ``detail`` is for people."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


RETRY_BUDGET = 60.0  # seconds: longer than a PostgreSQL restart or failover, with room to spare
FIRST_WAIT, MAX_WAIT = 0.1, 3.0
RETRIED = frozenset({502, 503, 504})  # a proxy with no replica behind it, or the database unavailable
NOT_RETRIED_CODES = frozenset({"no_active_policy"})


def backoff(attempt: int, retry_after: float = 0.0) -> float:
    """The wait before retry number ``attempt`` (0 for the first): exponential, capped, with "equal jitter"
    so that many clients turned away together do not come back together; at least ``retry_after``."""
    ceiling = min(MAX_WAIT, FIRST_WAIT * 2.0 ** min(attempt, 32))  # (2.0 ** 1024 would overflow)
    return max(retry_after, ceiling * (0.5 + random.random() / 2))


class CustodyClient:
    def __init__(
        self,
        base_url: str,
        key_id: str,
        private_key: SigningKey | bytes | str,
        *,
        timeout: float = 30.0,
        retry_budget: float = RETRY_BUDGET,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``timeout`` bounds each attempt; ``retry_budget`` the time spent retrying one call (0: no retries).
        ``transport`` is httpx's, for tests that answer in memory."""
        if isinstance(private_key, str):
            private_key = bytes.fromhex(private_key)
        self._key = private_key if isinstance(private_key, SigningKey) else SigningKey(private_key)
        self._key_id = key_id
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._clock = clock
        self.retry_budget = retry_budget

    def __repr__(self) -> str:
        return f"CustodyClient({str(self._http.base_url)!r}, key_id={self._key_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CustodyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        raw = json.dumps(body).encode() if body is not None else b""
        url = self._http.build_request(method, path, params={k: v for k, v in (params or {}).items() if v is not None})
        path_qs = url.url.raw_path.decode("ascii")  # what goes on the wire, escapes and all
        # What the server verifies (docs/api.md): the percent-decoded path, then the query exactly as sent.
        query = url.url.query.decode("ascii")
        signed_target = url.url.path + (f"?{query}" if query else "")
        extra = dict(headers or {})
        signed = sign_request(
            self._key,
            self._key_id,
            int(self._clock()),
            method,
            signed_target,
            raw,
            idempotency_key=extra.pop("Idempotency-Key", ""),
        )
        all_headers = {**extra, **signed}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        return self._http.request(method, path_qs, content=raw, headers=all_headers)

    def retrying(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        *,
        retries: int | None = None,
    ) -> httpx.Response:
        """``request``, sent again (signed afresh, the same headers) after a lost answer or a 502/503/504, with
        backoff, while the retry budget lasts and at most ``retries`` times if given. Only for requests that
        are safe to repeat: reads, and withdrawals with their Idempotency-Key."""
        deadline = time.monotonic() + self.retry_budget
        attempt = 0
        while True:
            retry_after = 0.0
            try:
                response = self.request(method, path, body, headers, params)
            except httpx.TransportError:  # refused, reset, or timed out: the request may or may not have arrived
                if not self._may_retry(attempt, retries, deadline):
                    raise
            else:
                if not _retriable(response) or not self._may_retry(attempt, retries, deadline):
                    return response
                retry_after = _retry_after(response)
            time.sleep(max(0.0, min(backoff(attempt, retry_after), deadline - time.monotonic())))
            attempt += 1

    @staticmethod
    def _may_retry(attempt: int, retries: int | None, deadline: float) -> bool:
        return (retries is None or attempt < retries) and time.monotonic() < deadline

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                problem = response.json()
                raise CustodyAPIError(response.status_code, problem.get("code", "error"), problem.get("detail", ""))
            except ValueError:
                raise CustodyAPIError(response.status_code, "error", response.text[:200]) from None
        return response.json()

    def create_withdrawal(
        self,
        asset: str,
        amount: str,
        destination: str,
        *,
        idempotency_key: str,
        client_reference: str | None = None,
        customer: str | None = None,
        retries: int | None = None,
    ) -> dict[str, Any]:
        """Request a withdrawal, for the exchange's ``customer`` if given. A lost answer or a 503 is retried
        within the retry budget (at most ``retries`` times if given), freshly signed with the same
        Idempotency-Key, so a request that did reach the database answers the same withdrawal instead of making
        a second."""
        body: dict[str, Any] = {"asset": asset, "amount": amount, "destination": destination}
        if client_reference is not None:
            body["client_reference"] = client_reference
        if customer is not None:
            body["customer"] = customer
        response = self.retrying("POST", "/v1/withdrawals", body, {"Idempotency-Key": idempotency_key}, retries=retries)
        return self._json(response)  # type: ignore[no-any-return]

    def get_withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        return self._json(self.retrying("GET", f"/v1/withdrawals/{withdrawal_id}"))  # type: ignore[no-any-return]

    def list_withdrawals(self, state: str | None = None, cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        params = {"state": state, "cursor": cursor, "limit": limit}
        return self._json(self.retrying("GET", "/v1/withdrawals", params=params))  # type: ignore[no-any-return]

    def cancel_withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        return self._json(self.request("POST", f"/v1/withdrawals/{withdrawal_id}/cancel"))  # type: ignore[no-any-return]

    def balances(self) -> dict[str, Any]:
        return self._json(self.retrying("GET", "/v1/balances"))  # type: ignore[no-any-return]

    def add_address(
        self, customer: str, asset: str, address: str, label: str, *, lock: int | None = None
    ) -> dict[str, Any]:
        """Add ``address`` to the customer's address book for ``asset``; it is locked for ``lock`` seconds (the
        policy's address_lock if None, and never less). Not retried: see the module's docstring."""
        body: dict[str, Any] = {"asset": asset, "address": address, "label": label}
        if lock is not None:
            body["lock"] = lock
        return self._json(self.request("POST", f"{_customer_path(customer)}/addresses", body))  # type: ignore[no-any-return]

    def list_addresses(self, customer: str, asset: str | None = None) -> dict[str, Any]:
        """``{"customer", "address_book_only", "items"}``: the customer's live entries, each locked or active."""
        path = f"{_customer_path(customer)}/addresses"
        return self._json(self.retrying("GET", path, params={"asset": asset}))  # type: ignore[no-any-return]

    def remove_address(self, customer: str, address: str, asset: str) -> dict[str, Any]:
        """Remove the customer's entry for ``address`` and ``asset``, at once. Not retried."""
        path = f"{_customer_path(customer)}/addresses/{quote(address, safe='')}"
        return self._json(self.request("DELETE", path, params={"asset": asset}))  # type: ignore[no-any-return]

    def set_address_book_only(self, customer: str, enabled: bool) -> dict[str, Any]:
        """Pay the customer only to its active address-book entries (``enabled``), or return to the default."""
        body = {"address_book_only": enabled}
        return self._json(self.retrying("PUT", _customer_path(customer), body))  # type: ignore[no-any-return]


def _customer_path(customer: str) -> str:
    """The customer's resource; an id the API would refuse is still escaped, so it reaches the API whole."""
    return f"/v1/customers/{quote(customer, safe='')}"


def _retriable(response: httpx.Response) -> bool:
    if response.status_code not in RETRIED:
        return False
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):  # a proxy's page, not a problem document
        return True
    return code not in NOT_RETRIED_CODES


def _retry_after(response: httpx.Response) -> float:
    """The server's Retry-After in seconds (the delta form; an HTTP date is ignored), capped at MAX_WAIT."""
    value = response.headers.get("retry-after", "")
    return min(MAX_WAIT, float(value)) if value.isdigit() else 0.0
