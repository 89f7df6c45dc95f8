"""Which chain an asset lives on, read and written; and every address of a policy checked for its chain.

An asset is on Ethereum unless it says ``chain = "bitcoin"``. A Bitcoin asset names its network, has 8
decimals and no contract, and caps what a cold batch may pay in fees: ``max_fee`` (in BTC in the file,
satoshis inside) and ``max_fee_rate`` (sat/vB). Its hot side is the Ethereum one's: ``hot_limit`` (the daemon's
hot wallet pays it, in batched transactions capped by the same two fees), the band (``hot_min``/``hot_max`` or
their shares: sweeps to the cold descriptor wallet, top-ups from it to the whitelist entry marked ``hot``),
``hot_topup`` and ``auto_freeze``; they are read and written as for any asset (``policies.loader``).

Canonical form: an Ethereum asset writes none of these fields, so bundles made before Bitcoin existed keep
their bytes and hash; a Bitcoin asset writes all four:

    assets.ASSET.chain: "bitcoin", .network: "regtest", .max_fee: "<satoshis>", .max_fee_rate: <sat/vB>
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.addresses import CHAINS, NETWORKS, destination
from policies.errors import AddressError, PolicyFileError
from policies.model import AssetRule
from policies.reading import BaseReader

ETHEREUM = "ethereum"
BITCOIN = "bitcoin"
BITCOIN_DECIMALS = 8
MAX_FEE_RATE = 10_000  # sat/vB: Bitcoin Core's own ceiling (-maxfeerate 0.1 BTC/kvB); a higher one is a typo
CHAIN_KEYS = frozenset({"chain", "network", "max_fee", "max_fee_rate"})


@dataclass(frozen=True, slots=True)
class ChainFields:
    chain: str = ETHEREUM
    network: str | None = None
    max_fee: int | None = None
    max_fee_rate: int | None = None


def chain_to_canonical(rule: AssetRule) -> dict[str, Any]:
    """The chain fields of an asset's canonical form: none for Ethereum, all four for Bitcoin."""
    if rule.chain == ETHEREUM:
        return {}
    return {
        "chain": rule.chain,
        "network": rule.network,
        "max_fee": str(rule.max_fee),
        "max_fee_rate": rule.max_fee_rate,
    }


def chain_name(rule: AssetRule) -> str:
    return rule.chain if rule.network is None else f"{rule.chain} {rule.network}"


class ChainReader(BaseReader):
    """The chain of an asset, and addresses read for a chain (``policies.addresses``)."""

    def chain_fields(self, t: Mapping[str, Any], path: str, decimals: int) -> ChainFields:
        """Read before the asset's amounts: the chain decides what else the asset may say."""
        chain = t.get("chain", ETHEREUM)
        if not self.human and "chain" in t and chain == ETHEREUM:
            raise PolicyFileError(f"{path}.chain", "is written only for an asset that is not on ethereum")
        chain = self.text(chain, f"{path}.chain")
        if chain not in CHAINS:
            raise PolicyFileError(f"{path}.chain", f"unknown chain {chain!r}; expected one of {', '.join(CHAINS)}")
        if chain == ETHEREUM:
            for key in sorted(CHAIN_KEYS - {"chain"}):
                if key in t:
                    raise PolicyFileError(f"{path}.{key}", 'is only for a bitcoin asset (chain = "bitcoin")')
            return ChainFields()
        if decimals != BITCOIN_DECIMALS:
            raise PolicyFileError(f"{path}.decimals", "must be 8 for a bitcoin asset (1 BTC = 100000000 satoshis)")
        if t.get("contract") is not None:
            raise PolicyFileError(f"{path}.contract", "a bitcoin asset has no contract")
        for key in ("network", "max_fee", "max_fee_rate"):
            if key not in t:
                raise PolicyFileError(f"{path}.{key}", "is required for a bitcoin asset")
        network = self.text(t["network"], f"{path}.network")
        if network not in NETWORKS:
            raise PolicyFileError(
                f"{path}.network", f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}"
            )
        return ChainFields(
            chain=chain,
            network=network,
            max_fee=self.amount(t["max_fee"], decimals, f"{path}.max_fee"),
            max_fee_rate=self.count(t["max_fee_rate"], f"{path}.max_fee_rate", 1, MAX_FEE_RATE),
        )

    def one_native_coin_each(self, assets: Mapping[str, AssetRule]) -> None:
        """Without a contract an asset is paid as its chain's native coin; two such assets on one chain (and
        network) would pay one asset's amounts in the other's units."""
        coins: dict[tuple[str, str | None], str] = {}
        for symbol, rule in sorted(assets.items()):
            if rule.contract is not None:
                continue
            coin = (rule.chain, rule.network)
            if coin in coins:
                raise PolicyFileError(
                    f"assets.{symbol}.contract",
                    f"only one asset may be the native coin (no contract); {coins[coin]} already is",
                )
            coins[coin] = symbol

    def chain_address(self, value: Any, path: str, chain: str, network: str | None) -> str:
        """``value`` as an address of this chain, in its canonical form (a whitelist entry's, say)."""
        try:
            return self._canonical(destination(chain, network, value), value, path)
        except AddressError as exc:
            raise PolicyFileError(path, exc.message) from None

    def _canonical(self, address: str, value: Any, path: str) -> str:
        """A bundle holds each address in its one canonical form: any other spelling is a host's edit."""
        if not self.human and address != value:
            raise PolicyFileError(path, f"{str(value)[:100]!r} is not in its canonical form {address}")
        return address

    def entry_address(self, value: Any, path: str, names: Sequence[str], assets: Mapping[str, AssetRule]) -> str:
        """A whitelist entry's address, valid on the chain (and network) of every asset it lists."""
        first = assets[names[0]]
        for i, name in enumerate(names[1:], 1):
            rule = assets[name]
            if (rule.chain, rule.network) != (first.chain, first.network):
                raise PolicyFileError(
                    f"{path}.assets[{i}]",
                    f"{name} is on {chain_name(rule)} and {first.symbol} on {chain_name(first)}: an address belongs "
                    "to one chain, so write one entry per chain",
                )
        return self.chain_address(value, f"{path}.address", first.chain, first.network)

    def any_chain_address(self, value: Any, path: str, assets: Mapping[str, AssetRule]) -> str:
        """A deny-list address names no asset: valid on any chain (and network) the policy's assets use."""
        chains = sorted({(r.chain, r.network) for r in assets.values()}, key=lambda c: (c[0] != ETHEREUM, c))
        errors: list[AddressError] = []
        for chain, network in chains:
            try:
                address = destination(chain, network, value)
            except AddressError as exc:
                errors.append(exc)
                continue
            return self._canonical(address, value, path)
        raise PolicyFileError(path, "; ".join(dict.fromkeys(e.message for e in errors)))  # what each chain says
