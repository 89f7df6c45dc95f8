"""The Python client the exchange backend imports. Every request is signed (see ``custody.signing``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from nacl.signing import SigningKey

from custody.signing import sign_request


class CustodyAPIError(Exception):
    """A problem-details answer from the daemon; ``code`` is stable, ``detail`` is for people."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class CustodyClient:
    def __init__(
        self,
        base_url: str,
        key_id: str,
        private_key: SigningKey | bytes | str,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(private_key, str):
            private_key = bytes.fromhex(private_key)
        self._key = private_key if isinstance(private_key, SigningKey) else SigningKey(private_key)
        self._key_id = key_id
        self._http = httpx.Client(base_url=base_url, timeout=timeout)
        self._clock = clock

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
        retries: int = 5,
    ) -> dict[str, Any]:
        """Request a withdrawal. A 503 or a broken connection is retried (freshly signed, same Idempotency-Key,
        so a request that did reach the database answers the same withdrawal instead of making a second)."""
        body: dict[str, Any] = {"asset": asset, "amount": amount, "destination": destination}
        if client_reference is not None:
            body["client_reference"] = client_reference
        for attempt in range(retries + 1):
            try:
                response = self.request("POST", "/v1/withdrawals", body, {"Idempotency-Key": idempotency_key})
            except httpx.TransportError:
                if attempt == retries:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))
                continue
            if response.status_code != 503 or attempt == retries:
                return self._json(response)  # type: ignore[no-any-return]
            time.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    def get_withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        return self._json(self.request("GET", f"/v1/withdrawals/{withdrawal_id}"))  # type: ignore[no-any-return]

    def list_withdrawals(self, state: str | None = None, cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        return self._json(
            self.request(
                "GET",
                "/v1/withdrawals",  # type: ignore[no-any-return]
                params={"state": state, "cursor": cursor, "limit": limit},
            )
        )

    def cancel_withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        return self._json(self.request("POST", f"/v1/withdrawals/{withdrawal_id}/cancel"))  # type: ignore[no-any-return]

    def balances(self) -> dict[str, Any]:
        return self._json(self.request("GET", "/v1/balances"))  # type: ignore[no-any-return]
