"""Per asset of the active policy: the hot wallet's position, the cold balance and the hot share.

One reading, three readers: ``GET /v1/balances`` (``read_balances``, its own read transaction), and
``custody status`` and ``/metrics`` (``positions``, inside the one read of ``custody.ops.figures``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from custody.ledger.policy import PolicyCache
from custody.ledger.positions import HotPosition, cold_balance, hot_position, hot_share
from custody.store.db import Store


@dataclass(frozen=True)
class AssetPosition:
    asset: str
    decimals: int  # the active policy's, to show the amounts in the asset's units
    hot: HotPosition
    cold: int | None  # None while there is no cold wallet or no reading of it
    hot_share_bp: int | None  # custody.ledger.positions.hot_share


def positions(session: Session, policies: PolicyCache) -> list[AssetPosition]:
    """Every asset of the active policy, by symbol. Raises ``NoActivePolicy`` before the first bundle."""
    out = []
    for symbol, rule in sorted(policies.get(session).policy.assets.items()):
        hot = hot_position(session, rule)
        cold = cold_balance(session, symbol)
        out.append(AssetPosition(symbol, rule.decimals, hot, cold, hot_share(hot, cold)))
    return out


def read_balances(store: Store, policies: PolicyCache) -> list[AssetPosition]:
    """``positions`` in a read transaction of its own: what ``GET /v1/balances`` answers."""
    with store.read() as s:
        return positions(s, policies)
