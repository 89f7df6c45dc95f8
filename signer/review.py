"""Reviewing a batch: read, parse, verify, rebuild, describe. Nothing from the online side is taken on trust.

``review`` returns the batch only if every check passes, in this order (the first failure is the error):

1. the daemon's Ed25519 signature, against the pinned daemon key;
2. chain id, Safe and MultiSendCallOnly, against the pinned cold wallet;
3. times, against this machine's clock: not expired, not dated ahead of it by more than the policy's
   ``batches.max_future``, and valid for no longer than ``batches.max_lifetime``;
4. the policy: the batch must cite this signer's newest verified bundle, and every transfer must pass its
   static rules (asset enabled, not denied, whitelisted and active for the asset, within the per-transfer
   maximum), with the token contract, decimals and whitelist label the bundle gives; a customer payout to a
   destination not on the whitelist instead carries the exchange backend's signed request for exactly it,
   and is judged an address-book or unlisted payout from what the signatures prove (``signer.payouts``);
5. the transaction: a delegatecall may only go to the pinned MultiSendCallOnly, and the SafeTx is rebuilt
   from the listed withdrawals and the policy's token contracts; every field must match, and so must the
   SafeTx hash.

What needs the signer's own history (nonces, withdrawals signed before, requests paid before, velocity and
unlisted windows, hot top-ups) is checked next by ``signer.ledger.check``, before anything is signed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from policies.bundle import Bundle
from policies.decision import Destination
from policies.model import Policy
from policies.text import escape, when
from policies.units import format_amount
from signer.batchfile import Batch, BatchWithdrawal, parse_batch_file
from signer.coldwallet import ColdWallet
from signer.errors import BatchMismatch, BatchPolicyRefused, BatchWrongWallet, SignerError
from signer.ledger import check_times
from signer.payouts import Payout, check_withdrawal
from signer.safetx import (
    CALL,
    DELEGATECALL,
    Call,
    SafeTx,
    build_safe_tx,
    decode_transfer,
    inner_calls,
    safe_tx_hash,
    transfer_call,
)

SAFE_TX_FIELDS = (
    "to",
    "value",
    "data",
    "operation",
    "nonce",
    "safe_tx_gas",
    "base_gas",
    "gas_price",
    "gas_token",
    "refund_receiver",
)


def review(raw: bytes, cold: ColdWallet, bundle: Bundle, now: int) -> Batch:
    parsed = parse_batch_file(raw)
    parsed.verify_daemon_signature(cold.daemon_key)
    batch = parsed.batch
    check_wallet(batch, cold)
    check_times(batch, bundle.policy, now)
    check_policy(batch, bundle, now)
    check_transaction(batch, cold, bundle.policy)
    return batch


def check_wallet(batch: Batch, cold: ColdWallet) -> None:
    if batch.chain_id != cold.chain_id:
        raise BatchWrongWallet(f"the batch is for chain {batch.chain_id}, the pinned cold wallet is on {cold.chain_id}")
    if batch.safe != cold.safe:
        raise BatchWrongWallet(f"the batch is for Safe {batch.safe}, the pinned cold wallet is {cold.safe}")
    if batch.multisend != cold.multisend:
        raise BatchWrongWallet(
            f"the batch names MultiSendCallOnly {batch.multisend}, the pinned one is {cold.multisend}"
        )


def withdrawal_refusal(policy: Policy, w: BatchWithdrawal, now: int) -> str | None:
    """Why signers refuse this transfer in a cold batch (its code and sentence), or None. The exporter uses it
    too, so it never puts a transfer in a batch that signers would refuse."""
    try:
        check_withdrawal(policy, w, now)
    except SignerError as exc:
        return f"[{exc.code}] {exc.message}"
    return None


def check_policy(batch: Batch, bundle: Bundle, now: int) -> dict[str, Payout]:
    """The batch cites the newest verified bundle and every transfer passes it; what each transfer was found
    to be, by withdrawal id."""
    if batch.policy_hash != bundle.hash:
        raise BatchPolicyRefused(
            f"the batch was made under policy v{batch.policy_version} ({batch.policy_hash[:16]}…); the newest "
            f"policy this signer has verified is v{bundle.version} ({bundle.hash[:16]}…)"
        )
    return payouts_of(batch, bundle.policy, now)


def payouts_of(batch: Batch, policy: Policy, now: int) -> dict[str, Payout]:
    """``signer.payouts.check_withdrawal`` for every transfer; the first refusal names its transfer."""
    found: dict[str, Payout] = {}
    for i, w in enumerate(batch.withdrawals, 1):
        try:
            found[w.id] = check_withdrawal(policy, w, now)
        except SignerError as exc:
            raise type(exc)(f"withdrawal {i} ({w.id}): {exc.message}") from None
    return found


def _calls(withdrawals: Sequence[BatchWithdrawal], policy: Policy) -> list[Call]:
    """Each transfer as the policy defines its asset: the token contract comes from the policy, never the file."""
    return [transfer_call(policy.assets[w.asset].contract, w.destination, w.amount) for w in withdrawals]


def rebuild(batch: Batch, multisend: str, policy: Policy) -> SafeTx:
    return build_safe_tx(_calls(batch.withdrawals, policy), batch.safe, batch.safe_nonce, multisend)


def assemble(
    *,
    batch_id: str,
    chain_id: int,
    safe: str,
    safe_nonce: int,
    multisend: str,
    policy_version: int,
    policy_hash: str,
    created_at: int,
    expires_at: int,
    withdrawals: Sequence[BatchWithdrawal],
    policy: Policy,
) -> Batch:
    """A batch exactly as ``review`` will rebuild it (the exporter uses this, so the two cannot disagree)."""
    tx = build_safe_tx(_calls(withdrawals, policy), safe, safe_nonce, multisend)
    return Batch(
        id=batch_id,
        chain_id=chain_id,
        safe=safe,
        safe_nonce=safe_nonce,
        multisend=multisend,
        policy_version=policy_version,
        policy_hash=policy_hash,
        created_at=created_at,
        expires_at=expires_at,
        withdrawals=tuple(withdrawals),
        safe_tx=tx,
        safe_tx_hash=safe_tx_hash(chain_id, safe, tx),
    )


def check_transaction(batch: Batch, cold: ColdWallet, policy: Policy) -> None:
    tx = batch.safe_tx
    if tx.operation == DELEGATECALL and tx.to != cold.multisend:
        raise BatchMismatch(f"the SafeTx delegatecalls {tx.to}, which is not the pinned MultiSendCallOnly")
    expected = rebuild(batch, cold.multisend, policy)
    for name in SAFE_TX_FIELDS:
        if getattr(tx, name) != getattr(expected, name):
            what = "calldata" if name == "data" else name
            raise BatchMismatch(
                f"the SafeTx's {what} is not the one rebuilt from the {len(batch.withdrawals)} listed withdrawals"
            )
    if safe_tx_hash(batch.chain_id, batch.safe, expected) != batch.safe_tx_hash:
        raise BatchMismatch("the SafeTx hash in the file is not the hash of the rebuilt transaction")


def describe(
    batch: Batch, policy: Policy, policy_version: int, payouts: Mapping[str, Payout] | None = None
) -> list[str]:
    """What the operator checks against the ticket before signing: the transfers with their withdrawal ids,
    totals, and the transaction itself as the Safe will run it (to, operation, value, each inner call decoded
    from the signed bytes). A customer payout also shows its customer, what the signer found its destination
    to be (``payouts``, from ``check_policy``), the backend whose request it verified and the operators who
    approved it. Every string from the file is escaped."""
    lines = [
        f"batch        {batch.id}",
        f"cold wallet  Safe {batch.safe} on chain {batch.chain_id}, Safe nonce {batch.safe_nonce}",
        f"policy       v{policy_version} ({batch.policy_hash})",
        f"created      {when(batch.created_at)}",
        f"expires      {when(batch.expires_at)}",
        "",
    ]
    if not batch.withdrawals:
        lines.append("no transfers: this batch only uses up the Safe nonce (it cancels an older batch)")
    else:
        lines.append(f"{'#':>4}  {'asset':<6} {'amount':>26}  {'destination':<42}  label / withdrawal id")
        totals: dict[str, int] = defaultdict(int)
        for i, w in enumerate(batch.withdrawals, 1):
            totals[w.asset] += w.amount
            amount = format_amount(w.amount, w.decimals)
            topup = "  TOP-UP OF THE HOT WALLET" if policy.is_hot(w.destination) else ""
            lines.append(f"{i:>4}  {w.asset:<6} {amount:>26}  {w.destination}  {escape(w.label)}{topup}")
            lines.append(f"{'':>4}  {'':<6} {'':>26}  {'':<42}  withdrawal {w.id}")
            payout = (payouts or {}).get(w.id)
            if w.customer is not None and payout is not None:
                lines.extend(f"{'':>4}  {'':<6} {'':>26}  {'':<42}  {line}" for line in _customer_lines(w, payout))
        decimals = {w.asset: w.decimals for w in batch.withdrawals}
        lines.append("")
        lines.append("totals")
        for asset in sorted(totals):
            count = sum(1 for w in batch.withdrawals if w.asset == asset)
            lines.append(f"      {asset:<6} {format_amount(totals[asset], decimals[asset]):>26}  in {count} transfers")
    lines += ["", *describe_transaction(batch, policy)]
    lines += ["", f"SafeTx hash  0x{batch.safe_tx_hash.hex()}"]
    return lines


def _customer_lines(w: BatchWithdrawal, payout: Payout) -> list[str]:
    marker = {
        Destination.WHITELIST: "treasury whitelist",
        Destination.ADDRESS_BOOK: "ADDRESS BOOK",
        Destination.UNLISTED: "UNLISTED ADDRESS",
    }[payout.kind]
    lines = [f"customer {escape(w.customer or '')}: {marker}", f"  {escape(payout.why)}"]
    if w.kind is not None and w.kind != payout.kind:
        lines.append(f"  (the daemon said {w.kind}; this signer found {payout.kind})")
    if payout.request is not None and w.request is not None:
        _, key = payout.request
        lines.append(f"  requested by backend {escape(w.request.key)}, idempotency key {escape(key)}")
    if payout.approved_by:
        lines.append(f"  held, approved by {', '.join(escape(name) for name in payout.approved_by)}")
    return lines


def describe_transaction(batch: Batch, policy: Policy) -> list[str]:
    """The SafeTx as the Safe will execute it, decoded from the bytes whose hash is signed."""
    tx = batch.safe_tx
    tokens = {r.contract: (symbol, r.decimals) for symbol, r in policy.assets.items() if r.contract is not None}
    native = next(((s, r.decimals) for s, r in policy.assets.items() if r.contract is None), ("native", 18))
    if tx.operation == DELEGATECALL:
        operation = f"DELEGATECALL to MultiSendCallOnly {tx.to}" if tx.to == batch.multisend else "DELEGATECALL"
    else:
        operation = "CALL"
    lines = [
        "transaction",
        f"  to         {tx.to}",
        f"  operation  {operation}",
        f"  value      {tx.value} wei",
        f"  gas refund none (safeTxGas {tx.safe_tx_gas}, baseGas {tx.base_gas}, gasPrice {tx.gas_price})",
    ]
    calls = inner_calls(tx, batch.multisend)
    for i, call in enumerate(calls, 1):
        op = "CALL" if call.operation == CALL else "DELEGATECALL"
        transfer = decode_transfer(call.data)
        if not call.data:
            symbol, dec = native
            what = (
                f"pays {format_amount(call.value, dec)} {symbol} ({call.value} base units) to {call.to}"
                if call.to != batch.safe
                else "calls the Safe itself with no data (uses up the nonce)"
            )
        elif transfer is not None and call.to in tokens and call.value == 0:
            symbol, dec = tokens[call.to]
            recipient, amount = transfer
            what = (
                f"pays {format_amount(amount, dec)} {symbol} ({amount} base units) to {recipient} "
                f"(ERC-20 transfer on {call.to})"
            )
        else:
            what = f"to {call.to}, value {call.value}, data 0x{call.data.hex()[:64]}… (NOT A PLAIN TRANSFER)"
        lines.append(f"  call {i:>3}   {op} {what}")
    return lines
