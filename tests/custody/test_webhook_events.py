"""What a receiver gets of an audit entry: the API's units (ISO 8601 times, decimal amounts), exactly."""

from __future__ import annotations

import json

from custody.ops.webhooks import edge_units, event
from custody.store.models import AuditEntry


def test_times_become_iso_8601_and_amounts_decimal_strings_with_the_base_units_beside():
    data = {
        "to": "received",
        "asset": "ETH",
        "amount": "1250000000000000001",
        "decimals": 18,
        "eligible_at": 1900000060,
        "at": 0,
        "by": "scheduler",
        "nonce": 7,
    }
    assert edge_units(data) == {
        "to": "received",
        "asset": "ETH",
        "amount": "1.250000000000000001",
        "amount_base_units": "1250000000000000001",
        "eligible_at": "2030-03-17T17:47:40Z",
        "at": "1970-01-01T00:00:00Z",
        "by": "scheduler",
        "nonce": 7,
    }


def test_an_entry_without_decimals_keeps_only_its_base_units_and_nulls_stay_null():
    out = edge_units({"amount": "5", "eligible_at": None, "confirmed": True})
    assert out == {"amount_base_units": "5", "eligible_at": None, "confirmed": True}


def test_the_event_carries_the_entry_in_edge_units():
    entry = AuditEntry(
        seq=3, at=1900000060, kind="withdrawal.received", subject="w1", hash="ab" * 32,
        data=json.dumps({"amount": "1500000", "decimals": 6}),
    )
    assert event(entry) == {
        "id": "ab" * 32, "seq": 3, "type": "withdrawal.received", "subject": "w1", "at": "2030-03-17T17:47:40Z",
        "data": {"amount": "1.5", "amount_base_units": "1500000"},
    }
