"""Keeping the hot wallet inside its band (policy `hot_min` / `hot_max`, or `hot_min_share` / `hot_max_share` of
the asset's total in the hot and cold wallets, per asset), on Ethereum and on Bitcoin alike.

Above `hot_max`, the excess over the band's middle is swept to the cold wallet: a hot withdrawal whose
destination is the cold wallet itself, so it needs no approval and is paid by the ordinary hot worker with
all its crash safety. Below `hot_min`, a top-up to the band's middle is raised: a cold withdrawal to the hot
address, which goes through a signing ceremony like any other (admins must whitelist the hot address, marked
``hot``, and the signers cap top-ups offline with ``hot_topup``).

Ethereum (``rebalance``): the cold wallet is the Safe, the hot address the hot EOA. Bitcoin
(``rebalance_bitcoin``, per network): a sweep goes to a fresh receive address of the cold descriptor wallet, taken
from the node as ``custody cold address`` does and derived again here from the recorded descriptor, so only an
address of the cold wallet's own receive branch is ever swept to (the daemon recognises it itself: no whitelist
entry is needed, as the Safe needs none); it is audited (``btccold.sweep_address``, with its index) and a used
address is never taken again. A top-up goes to the Bitcoin hot wallet's fixed receive address (index 0, the one
``custody status`` shows: ``BtcHotWallet.address``) and into a Bitcoin cold batch.

Both are withdrawals owned by the built-in, revoked key `custody-rebalancer`, so they are audited, visible
and counted like any other. At most one is open per asset at a time, so the band is never over-corrected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embit.descriptor import Descriptor
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain.bitcoin import BitcoinNode, open_wallet
from custody.clock import Clock
from custody.errors import ColdWalletMismatch
from custody.intake.withdrawals import new_withdrawal, record
from custody.ledger import audit, states
from custody.ledger.policy import Active, PolicyCache
from custody.ledger.positions import REBALANCER, HotPosition, btc_cold_balance, cold_balance, hot_position
from custody.store.db import Store, advisory_lock
from custody.store.models import BtcColdWallet, BtcHotWallet, ColdWallet, Withdrawal
from policies.addresses import bitcoin_script
from policies.chains import BITCOIN, ETHEREUM
from policies.evaluate import Decision, Outcome, Quantity, Reason, Route
from policies.model import AssetRule

RECEIVE = 0  # the cold descriptor's receive branch (``<0;1>``): sweeps are deposits


def plan(free: int, hot_min: int | None, hot_max: int | None) -> tuple[str, int] | None:
    """("sweep" | "top_up", amount) to bring ``free`` back to the middle of the band, or None."""
    low = hot_min if hot_min is not None else 0
    high = hot_max if hot_max is not None else low
    target = (low + high) // 2 if hot_max is not None else low
    if hot_max is not None and free > hot_max:
        return "sweep", free - target
    if hot_min is not None and free < hot_min:
        return "top_up", target - free
    return None


def effective_band(rule: AssetRule, total: int | None) -> tuple[int | None, int | None]:
    """The band in base units: amounts as given, shares of ``total`` (hot + cold) where it is known."""

    def side(amount: int | None, share: int | None) -> int | None:
        if amount is not None:
            return amount
        if share is None or total is None:
            return None
        return total * share // 10_000

    return side(rule.hot_min, rule.hot_min_share), side(rule.hot_max, rule.hot_max_share)


def has_band(rule: AssetRule) -> bool:
    return not (
        rule.hot_min is None and rule.hot_max is None and rule.hot_min_share is None and rule.hot_max_share is None
    )


@dataclass(frozen=True)
class Step:
    """What the band calls for: a sweep or a top-up of ``amount``, the bound that was passed, and the position."""

    kind: str  # "sweep" | "top_up"
    amount: int
    bound: int
    position: HotPosition


def decide(rule: AssetRule, position: HotPosition, cold_amount: int | None) -> Step | None:
    """The step the band calls for, if any (pure): the top-up held to ``hot_topup``, as the signers would hold it."""
    if position.block is None:
        return None  # the balance has not been read yet
    hot_min, hot_max = effective_band(rule, None if cold_amount is None else position.balance + cold_amount)
    step = plan(position.free, hot_min, hot_max)
    if step is None:
        return None
    kind, amount = step
    if kind == "top_up" and rule.hot_topup is not None:
        amount = min(amount, rule.hot_topup.limit)  # signers refuse more; the rest waits for a window
    bound = hot_max if kind == "sweep" else hot_min
    assert bound is not None
    return Step(kind, amount, bound, position)


def _open(s: Session, symbol: str) -> bool:
    """Whether a sweep or top-up of ``symbol`` is still open: then nothing more is raised."""
    found = s.execute(
        select(Withdrawal.id)
        .where(Withdrawal.api_key == REBALANCER, Withdrawal.asset == symbol, Withdrawal.state.not_in(states.FINAL))
        .limit(1)
    )
    return found.first() is not None


def _raise(s: Session, rule: AssetRule, step: Step, destination: str, active: Active, now: int) -> Withdrawal:
    """Record the sweep (hot, to the cold wallet) or top-up (cold, to the hot address) as a rebalancer's withdrawal."""
    if step.kind == "sweep":
        why = "hot wallet holds {} free, above the band's maximum of {}: sweep to the cold wallet"
        route = Route.HOT
    else:
        why = "hot wallet holds {} free, below the band's minimum of {}: top-up from the cold wallet"
        route = Route.COLD
    symbol = rule.symbol
    quantities = (Quantity(step.position.free, rule.decimals, symbol), Quantity(step.bound, rule.decimals, symbol))
    reason = Reason("rebalance", True, why, quantities)
    return record(
        s,
        new_withdrawal(
            api_key=REBALANCER,
            idempotency_key=f"{step.kind}:{symbol}:{now}:{step.position.block}",
            request_hash="0" * 64,
            asset=symbol,
            amount=step.amount,
            decimals=rule.decimals,
            destination=destination,
            decision=Decision(Outcome.ALLOW, route, now, (reason,)),
            version=active.version,
            policy_hash=active.hash,
            now=now,
            client_reference=step.kind,
        ),
        now,
    )


def rebalance(store: Store, policies: PolicyCache, clock: Clock, hot_address: str) -> list[str]:
    """Raise the sweeps and top-ups the band calls for on Ethereum; return the new withdrawals' ids."""
    created: list[str] = []
    with store.transaction() as s:
        advisory_lock(s, "rebalance")
        cold = s.execute(select(ColdWallet.address).limit(1)).scalar_one_or_none()
        if cold is None:
            return created  # no cold wallet yet: nowhere to sweep to or top up from
        active = policies.get(s)
        now = clock.now()
        for symbol, rule in sorted(active.policy.assets.items()):
            if rule.chain != ETHEREUM or not has_band(rule) or _open(s, symbol):
                continue
            step = decide(rule, hot_position(s, rule), cold_balance(s, symbol))
            if step is not None:
                created.append(_raise(s, rule, step, cold if step.kind == "sweep" else hot_address, active, now).id)
    return created


def rebalance_bitcoin(store: Store, policies: PolicyCache, clock: Clock, node: BitcoinNode, network: str) -> list[str]:
    """Raise the sweep or top-up the band calls for on this Bitcoin network; return the new withdrawal's id."""
    with store.transaction() as s:
        advisory_lock(s, "rebalance")
        cold = s.execute(select(BtcColdWallet).where(BtcColdWallet.network == network)).scalar_one_or_none()
        hot = s.execute(select(BtcHotWallet).where(BtcHotWallet.network == network)).scalar_one_or_none()
        if cold is None or hot is None:
            return []  # nowhere to sweep to or top up from (yet)
        active = policies.get(s)
        found = [
            rule for rule in active.policy.assets.values() if rule.chain == BITCOIN and rule.network == network
        ]  # one native coin per network (``policies.chains``)
        if not found or not has_band(found[0]) or _open(s, found[0].symbol):
            return []
        rule = found[0]
        step = decide(rule, hot_position(s, rule), btc_cold_balance(s, rule.symbol))
        if step is None:
            return []
        now = clock.now()
        if step.kind == "top_up":
            return [_raise(s, rule, step, hot.address, active, now).id]
        address, index = sweep_address(node, cold, lambda a: _used(s, a))
        w = _raise(s, rule, step, address, active, now)
        audit.append(s, now, "btccold.sweep_address", w.id, {"wallet": cold.wallet, "address": address, "index": index})
        return [w.id]


def _used(s: Session, address: str) -> bool:
    return s.execute(select(Withdrawal.id).where(Withdrawal.destination == address).limit(1)).first() is not None


def sweep_address(node: BitcoinNode, cold: BtcColdWallet, used: Callable[[str], bool]) -> tuple[str, int]:
    """A fresh address of the cold descriptor's receive branch and its index: the node's next one (as ``custody cold
    address`` gives it), accepted only once derived again here from the recorded descriptor, and never one a
    withdrawal has paid to already."""
    watch = open_wallet(node, cold.wallet)
    for _ in range(3):  # the node hands out each index once; a used one is skipped, not reused
        address = str(watch.call("getnewaddress", "", "bech32"))
        index = receive_index(str(watch.call("getaddressinfo", address).get("desc", "")))
        if index is None or own_script(cold.descriptor, index) != bitcoin_script(cold.network, address):
            raise ColdWalletMismatch(
                f"the node's wallet {cold.wallet} gave {address[:90]!r}, which is not an address of the cold wallet's "
                "receive branch: nothing is swept"
            )
        if not used(address):
            return address, index
    raise ColdWalletMismatch(
        f"the node's wallet {cold.wallet} keeps giving addresses already paid to: nothing is swept"
    )


def receive_index(desc: str) -> int | None:
    """The receive-branch index of a key's origins in a descriptor the node infers for an address
    (``wsh(sortedmulti(2,[fp/48h/1h/0h/2h/0/7]02…,…))``): every key must name the same one."""
    indexes = set()
    for origin in desc.split("[")[1:]:
        path = origin.partition("]")[0].split("/")
        if len(path) < 3 or path[-2] != str(RECEIVE) or not path[-1].isdigit():
            return None
        indexes.add(int(path[-1]))
    return indexes.pop() if len(indexes) == 1 else None


def own_script(descriptor: str, index: int) -> bytes:
    """The scriptPubKey of the cold descriptor's receive address at ``index``."""
    body = descriptor.rpartition("#")[0] if "#" in descriptor else descriptor
    return bytes(Descriptor.from_string(body).derive(index, branch_index=RECEIVE).script_pubkey().data)
