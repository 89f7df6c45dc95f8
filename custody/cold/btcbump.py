"""Fee bumps of Bitcoin cold batches stuck in the mempool: reported once, then exported for the owners to sign.

A broadcast batch not mined ``stuck_after`` seconds after it was sent is reported stuck once (``note_stuck``: a
log line and a ``batch.stuck`` audit entry, which ``custody status`` and ``/metrics`` read). ``bump`` then builds,
with the node's ``psbtbumpfee``, a BIP-125 replacement of its transaction: the same outputs (the withdrawals and
the change, less the extra fee), every input of the stuck transaction (plus coins if the change cannot pay), a fee
rate at least the old one plus the node's incremental relay fee, and never over the policy's ``max_fee`` or
``max_fee_rate``. It is exported as a new batch with ``replaces`` = the stuck one and the same withdrawal objects,
which the owners sign in a new ceremony (their signers accept a fee bump of a batch they signed).

Which of a family's transactions (a batch and its bumps) settles the withdrawals is ``custody.cold.btcfamily``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from nacl.signing import SigningKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from custody.chain.bitcoin import BitcoinNode, open_wallet
from custody.cold import btcpsbt, btcwallet
from custody.cold.batches import DEFAULT_EXPIRY
from custody.cold.btcbatches import OPEN, SAT, BtcState, audit_exported, bitcoin_assets, lock, write_export
from custody.errors import BatchRefused, BitcoinNodeError, NotFound
from custody.ledger import audit, freeze
from custody.ledger.policy import PolicyCache
from custody.store.db import Store
from custody.store.models import AuditEntry, BtcBatch, BtcBatchInput, BtcColdWallet
from policies.addresses import bitcoin_script
from policies.model import AssetRule
from policies.units import format_amount
from signer.btcbatch import canonical_psbt, parse_btc_batch_file
from signer.psbtreview import vsize as signed_vsize
from signer.review import withdrawal_refusal

log = logging.getLogger("custody.bitcoin")


@dataclass
class Bumped:
    batch_id: str
    replaces: str
    path: Path
    txid: str
    fee: int
    fee_rate: int
    old_fee: int
    old_fee_rate: int
    inputs: int


# -- stuck -------------------------------------------------------------------------------------------------
def note_stuck(s: Session, batch: BtcBatch, now: int, stuck_after: int) -> bool:
    """Record once that ``batch`` (broadcast, not in a block) has waited ``stuck_after`` since it was sent; True
    the first time. A later send (after a reorg) starts the wait again."""
    if batch.state != BtcState.BROADCAST or batch.block_hash is not None or now - batch.updated_at < stuck_after:
        return False
    if is_stuck(s, batch):
        return False
    audit.append(
        s,
        now,
        "batch.stuck",
        batch.id,
        {"chain": "bitcoin", "txid": batch.txid, "since": batch.updated_at, "fee": str(batch.fee)},
    )
    log.warning(
        "batch %s: transaction %s not mined %d s after it was sent; `custody batch bump %s` exports a fee bump",
        batch.id,
        batch.txid,
        now - batch.updated_at,
        batch.id,
    )
    return True


def is_stuck(s: Session, batch: BtcBatch) -> bool:
    if batch.state != BtcState.BROADCAST or batch.block_hash is not None:
        return False
    query = select(AuditEntry.seq).where(
        AuditEntry.kind == "batch.stuck", AuditEntry.subject == batch.id, AuditEntry.at >= batch.updated_at
    )
    return s.execute(query.limit(1)).first() is not None


def open_bump(s: Session, batch_id: str) -> BtcBatch | None:
    """The bump of ``batch_id`` not yet sent (or sent and still open), if any."""
    query = select(BtcBatch).where(BtcBatch.replaces == batch_id, BtcBatch.state.in_(list(OPEN)))
    return s.execute(query.limit(1)).scalar_one_or_none()


# -- the bump ----------------------------------------------------------------------------------------------
def bump(
    store: Store,
    node: BitcoinNode,
    identity: SigningKey,
    out_dir: Path,
    now: int,
    batch_id: str,
    *,
    fee_rate: int | None = None,
    expires_in: int = DEFAULT_EXPIRY,
) -> Bumped:
    """Export the fee bump of broadcast batch ``batch_id`` (see the module)."""
    with store.read() as s:
        freeze.refuse_if_frozen(s, "exporting a fee bump")
        stuck = s.get(BtcBatch, batch_id)
        if stuck is None:
            raise NotFound(f"no Bitcoin batch {batch_id}")
        if stuck.state != BtcState.BROADCAST:
            raise BatchRefused(f"batch {batch_id} is {stuck.state}; only a broadcast, unmined batch can be bumped")
        pending = open_bump(s, batch_id)
        if pending is not None:
            raise BatchRefused(
                f"batch {batch_id} has a fee bump already, batch {pending.id} ({pending.state}): sign it, or cancel "
                "it first"
            )
        policy = PolicyCache().get(s).policy
        rule = bitcoin_assets(policy).get(stuck.asset)
        if rule is None:
            raise BatchRefused(f"{stuck.asset} is no longer a bitcoin asset of the active policy")
        wallet = s.get_one(BtcColdWallet, stuck.wallet)
        original = parse_btc_batch_file(stuck.raw).batch
        old_inputs = list(s.execute(select(BtcBatchInput).where(BtcBatchInput.batch_id == batch_id)).scalars())
    if expires_in > policy.batches.max_lifetime:
        raise BatchRefused(f"a batch may live at most {policy.batches.max_lifetime} s under the policy")
    for item in original.withdrawals:  # the signers judge them again under the active policy
        why = withdrawal_refusal(policy, item, now)
        if why is not None:
            raise BatchRefused(
                f"the signers would refuse withdrawal {item.id} in a bump under the active policy: {why}"
            )
    watch = open_wallet(node, wallet.wallet)
    old_fee, old_vsize = _in_mempool(node, watch, stuck)
    old_rate = math.ceil(old_fee / old_vsize)
    rate = _target_rate(node, rule, stuck.asset, old_rate, fee_rate)
    try:
        result = watch.call("psbtbumpfee", stuck.txid, {"fee_rate": rate})
    except BitcoinNodeError as exc:
        raise BatchRefused(f"the node cannot bump {stuck.txid}: {exc.node_message or exc.message}") from None
    payments = [(bitcoin_script(wallet.network, w.destination), w.amount) for w in original.withdrawals]
    funded = btcpsbt.check_funded(str(result["psbt"]), payments, wallet.descriptor, 21 * 10**14, _previous(watch))
    _check_caps(rule, stuck.asset, wallet, funded)
    spent = {(o.txid, o.vout) for o in funded.inputs}
    if not {(o.txid, o.vout) for o in old_inputs} <= spent:
        raise BatchRefused("the node's replacement leaves out a coin of the stuck transaction; nothing was exported")
    psbt = canonical_psbt(funded.psbt)
    new_id = str(uuid.uuid4())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"btc-batch-{new_id[:8]}.json"
    with store.transaction() as s:
        s.get_one(BtcColdWallet, wallet.wallet, with_for_update=True)  # exports never interleave
        row = s.get_one(BtcBatch, batch_id, with_for_update=True)
        if row.state != BtcState.BROADCAST or open_bump(s, batch_id) is not None:
            raise BatchRefused(f"batch {batch_id} changed while its bump was built ({row.state}); try again")
        freeze.refuse_if_frozen(s, "exporting a fee bump")
        active = PolicyCache().get(s)
        doc, tmp = write_export(
            s,
            identity,
            wallet,
            active,
            new_id,
            row.asset,
            original.withdrawals,
            psbt,
            funded,
            batch_id,
            path,
            now,
            expires_in,
        )
        audit_exported(s, doc, row.asset, funded, rate, [], now)
        s.flush()
        added = tuple(o for o in funded.inputs if (o.txid, o.vout) not in {(i.txid, i.vout) for i in old_inputs})
        with contextlib.suppress(BitcoinNodeError):  # the next export's sync_locks sets a lock it missed
            lock(watch, added)
    os.replace(tmp, path)
    return Bumped(new_id, batch_id, path, funded.txid, funded.fee, rate, old_fee, old_rate, len(funded.inputs))


def _in_mempool(node: BitcoinNode, watch: BitcoinNode, batch: BtcBatch) -> tuple[int, int]:
    """The stuck transaction's fee and virtual size as the mempool holds it; refused if it is mined already."""
    try:
        depth = int(watch.call("gettransaction", batch.txid).get("confirmations", 0))
    except BitcoinNodeError:
        depth = 0
    if depth > 0:
        raise BatchRefused(f"batch {batch.id}'s transaction is mined ({depth} confirmations): nothing to bump")
    try:
        entry = node.call("getmempoolentry", batch.txid)
    except BitcoinNodeError:
        raise BatchRefused(
            f"batch {batch.id}'s transaction is not in the node's mempool: `custody batch follow` sends it again first"
        ) from None
    return round(Decimal(str(entry["fees"]["base"])) * SAT), int(entry["vsize"])


def _target_rate(node: BitcoinNode, rule: AssetRule, asset: str, old_rate: int, asked: int | None) -> int:
    """BIP-125: a rate above the old one by at least the incremental relay fee; by default the node's estimate
    when it is higher. Never above the policy's cap, which the signers enforce."""
    info = node.call("getnetworkinfo")
    incremental = max(1, math.ceil(Decimal(str(info.get("incrementalfee", "0.00001"))) * SAT / 1000))
    minimum = old_rate + incremental
    if asked is not None and asked < minimum:
        raise BatchRefused(
            f"--fee-rate {asked} sat/vB cannot replace the stuck transaction: BIP-125 needs at least {minimum} "
            f"sat/vB (it pays {old_rate} sat/vB, plus the node's incremental relay fee of {incremental})"
        )
    rate = asked if asked is not None else max(minimum, _estimate(node))
    if rule.max_fee_rate is not None and rate > rule.max_fee_rate:
        raise BatchRefused(
            f"a bump to {rate} sat/vB exceeds {asset}'s max_fee_rate of {rule.max_fee_rate} sat/vB in the policy "
            "(the signers refuse it); nothing was exported"
        )
    return rate


def _estimate(node: BitcoinNode) -> int:
    try:
        found = node.call("estimatesmartfee", 2).get("feerate")
    except BitcoinNodeError:
        return 0
    return 0 if found is None else math.ceil(Decimal(str(found)) * SAT / 1000)


def _check_caps(rule: AssetRule, asset: str, wallet: BtcColdWallet, funded: btcpsbt.Funded) -> None:
    """The policy's caps as the signers compute them (the finalized size with the largest signatures)."""
    psbt = btcpsbt.parse(funded.psbt)
    owners = len(btcwallet.owner_fingerprints(wallet))
    size = signed_vsize(wallet.threshold, owners, len(psbt.tx.vin), [bytes(o.script_pubkey.data) for o in psbt.tx.vout])
    if rule.max_fee is not None and funded.fee > rule.max_fee:
        raise BatchRefused(
            f"the bump would pay {format_amount(funded.fee, 8)} {asset}, over the policy's max_fee of "
            f"{format_amount(rule.max_fee, 8)} {asset}; nothing was exported"
        )
    if rule.max_fee_rate is not None and math.ceil(funded.fee / size) > rule.max_fee_rate:
        raise BatchRefused(
            f"the bump would pay {math.ceil(funded.fee / size)} sat/vB over {size} vB, over {asset}'s max_fee_rate "
            f"of {rule.max_fee_rate} sat/vB in the policy; nothing was exported"
        )


def _previous(watch: BitcoinNode) -> Callable[[str], str]:
    def previous(txid: str) -> str:
        try:
            return str(watch.call("gettransaction", txid)["hex"])
        except BitcoinNodeError:
            return str(watch.call("getrawtransaction", txid))

    return previous
