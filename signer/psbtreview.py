"""Reviewing a Bitcoin batch: read, parse, verify, rebuild, describe. Nothing from the online side is trusted.

``review_btc`` returns the batch and what it found only if every check passes, in this order (the first failure
is the refusal, docs/batch-protocol.md section 9):

1. the daemon's Ed25519 signature, against the pinned daemon key (``batch_daemon_signature_invalid``);
2. network and descriptor, against the pinned Bitcoin wallet (``btc_wrong_wallet``);
3. times, as for Ethereum (``batch_expired``, ``batch_time_invalid``);
4. the policy: the newest verified bundle (``batch_policy_refused``), every withdrawal of the bitcoin asset of
   this network and passing ``signer.payouts.check_withdrawal`` (whitelist, customer payouts and their codes);
5. the transaction's form: version 2, every nSequence 0xfffffffd (RBF, no relative lock), locktime 0 or a
   block height not far ahead, or a time not in the future, outputs within 21 million BTC; for a PSBT version
   2 (BIP-370), no input or output still modifiable and no per-input required locktime, so the transaction
   signed is the fixed one its fields spell (``btc_tx_form_invalid``); no redeem script or taproot field on an
   input (``btc_foreign_input``); global xpubs, if any, exactly the pinned ones (``btc_xpub_mismatch``); no
   signatures or finalized inputs yet;
6. inputs: no outpoint twice (``btc_duplicate_input``); each with a non_witness_utxo and a witness_utxo
   (``btc_utxo_missing``), the first hashing to the outpoint's txid and the second equal to its output (the
   segwit fee attack; ``btc_utxo_mismatch``); SIGHASH_ALL or none (``btc_sighash_forbidden``); its bip32
   derivations, one per owner, at one ``branch/index`` (branch 0 or 1, index below the gap limit), re-deriving
   from the pinned xpubs its witness script and the output it spends (``btc_foreign_input``);
7. outputs: no OP_RETURN, zero-value or dust output (``btc_output_forbidden``); exactly one output per
   withdrawal, its script ``policies.addresses.bitcoin_script`` and its exact amount, and at most one more
   (``btc_outputs_mismatch``): the change, re-derived on branch 1 of the wallet within the gap limit
   (``btc_change_invalid``);
8. the fee (inputs − outputs): at most the asset's ``max_fee``, at most ``max_fee_rate`` over the vsize the
   finalized transaction will have, and below 10% of the amount sent (``btc_fee_too_high``).

What needs the signer's history (withdrawals and outpoints signed before, fee bumps, windows) is
``signer.btcledger``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from policies.addresses import bitcoin_script
from policies.bundle import Bundle
from policies.model import AssetRule, Policy
from policies.text import escape, when
from policies.units import format_amount
from signer.btcbatch import (
    GLOBAL_TX_MODIFIABLE,
    IN_REQUIRED_HEIGHT_LOCKTIME,
    IN_REQUIRED_TIME_LOCKTIME,
    BtcBatch,
    parse_btc_batch_file,
    psbt_version,
)
from signer.btckeys import GAP_LIMIT, account_indexes, xpub_version
from signer.btcwallet import BtcColdWallet, derived_pubkey, p2wsh
from signer.errors import (
    BatchPolicyRefused,
    BtcBatchInvalid,
    BtcChangeInvalid,
    BtcDuplicateInput,
    BtcFeeTooHigh,
    BtcForeignInput,
    BtcOutputForbidden,
    BtcOutputsMismatch,
    BtcSighashForbidden,
    BtcTxFormInvalid,
    BtcUtxoMismatch,
    BtcUtxoMissing,
    BtcWrongWallet,
    BtcXpubMismatch,
    SignerError,
)
from signer.ledger import check_times
from signer.payouts import Payout, check_withdrawal

RBF_SEQUENCE = 0xFFFFFFFD
SIGHASH_ALL = 1
LOCKTIME_THRESHOLD = 500_000_000  # below: a block height; at or above: a unix time (consensus rule)
# A height lock is allowed up to a week of blocks above the height this machine's clock implies on mainnet,
# estimated as if blocks came every 9 minutes since block 840,000 (so an honest tip is never over-run).
MAINNET_ANCHOR = (840_000, 1_713_571_767)
HEIGHT_SLACK = 1008
TEST_MAX_HEIGHT = 5_000_000  # a test network's tip cannot be guessed from a clock: only a sanity bound
MAX_FEE_SHARE = 10  # percent of the amount sent
MAX_MONEY = 21_000_000 * 10**8  # sat (consensus MoneyRange)


@dataclass(frozen=True, slots=True)
class Spend:
    """One input, as the signer verified it."""

    outpoint: str  # "<txid>:<vout>", txid in display order
    value: int
    branch: int
    index: int


@dataclass(frozen=True, slots=True)
class BtcReview:
    batch: BtcBatch
    txid: str
    inputs: tuple[Spend, ...]
    change: tuple[int, int] | None  # (value, index on branch 1)
    fee: int
    vsize: int
    locktime: int
    payouts: dict[str, Payout]
    psbt_version: int = 0  # 0 (BIP-174) or 2 (BIP-370): the signature file is written in the same version

    @property
    def outpoints(self) -> tuple[str, ...]:
        return tuple(s.outpoint for s in self.inputs)

    @property
    def sent(self) -> int:
        return sum(w.amount for w in self.batch.withdrawals)


def review_btc(raw: bytes, wallet: BtcColdWallet, bundle: Bundle, now: int) -> BtcReview:
    parsed = parse_btc_batch_file(raw)
    parsed.verify_daemon_signature(wallet.daemon_key)
    batch = parsed.batch
    if batch.network != wallet.network or batch.descriptor != wallet.descriptor:
        raise BtcWrongWallet(
            f"the batch is for {batch.network} wallet …#{batch.descriptor.rsplit('#', 1)[-1][:8]}; the pinned "
            f"Bitcoin wallet is {wallet.network} …#{wallet.checksum}"
        )
    check_times(batch, bundle.policy, now)
    rule, payouts = check_policy(batch, bundle, now)
    psbt = batch.parsed_psbt()
    check_form(psbt, wallet, now)
    inputs = check_inputs(psbt, wallet)
    change = check_outputs(psbt, wallet, batch)
    fee = sum(s.value for s in inputs) - sum(int(o.value) for o in psbt.tx.vout)
    size = vsize(wallet.threshold, len(wallet.owners), len(inputs), [bytes(o.script_pubkey.data) for o in psbt.tx.vout])
    check_fee(rule, fee, size, sum(w.amount for w in batch.withdrawals))
    txid = bytes(psbt.tx.txid()).hex()
    locktime = int(psbt.locktime or 0)
    return BtcReview(batch, txid, inputs, change, fee, size, locktime, payouts, psbt_version(psbt))


def check_policy(batch: BtcBatch, bundle: Bundle, now: int) -> tuple[AssetRule, dict[str, Payout]]:
    """The batch cites the newest verified bundle; every withdrawal is of one bitcoin asset of the batch's
    network and passes ``signer.payouts.check_withdrawal``."""
    if batch.policy_hash != bundle.hash:
        raise BatchPolicyRefused(
            f"the batch was made under policy v{batch.policy_version} ({batch.policy_hash[:16]}…); the newest "
            f"policy this signer has verified is v{bundle.version} ({bundle.hash[:16]}…)"
        )
    policy = bundle.policy
    assets = {w.asset for w in batch.withdrawals}
    if len(assets) != 1:
        raise BatchPolicyRefused(f"a Bitcoin batch pays one asset, not {', '.join(sorted(assets))}")
    (asset,) = assets
    rule = policy.assets.get(asset)
    if rule is None or rule.chain != "bitcoin" or rule.network != batch.network:
        raise BatchPolicyRefused(f"{asset} is not the policy's bitcoin asset on {batch.network}")
    found: dict[str, Payout] = {}
    for i, w in enumerate(batch.withdrawals, 1):
        try:
            found[w.id] = check_withdrawal(policy, w, now)
        except SignerError as exc:
            raise type(exc)(f"withdrawal {i} ({w.id}): {exc.message}") from None
    return rule, found


def check_form(psbt: Any, wallet: BtcColdWallet, now: int) -> None:
    if psbt.tx_version != 2:
        raise BtcTxFormInvalid(f"the transaction is version {psbt.tx_version}; this signer signs version 2 only")
    for i, inp in enumerate(psbt.inputs):
        if inp.sequence != RBF_SEQUENCE:
            raise BtcTxFormInvalid(
                f"input {i} has nSequence {inp.sequence:#010x}; a batch signals replace-by-fee with exactly "
                f"{RBF_SEQUENCE:#010x} (no relative lock), so it can be fee-bumped"
            )
    check_fixed(psbt)
    check_locktime(int(psbt.locktime or 0), wallet.network, now)
    values = [int(o.value) for o in psbt.tx.vout]
    if any(v > MAX_MONEY for v in values) or sum(values) > MAX_MONEY:
        # Consensus (MoneyRange): such a transaction is never valid, whatever a made-up previous one holds.
        raise BtcTxFormInvalid("the outputs pay more than 21 million BTC: no such transaction can be valid")
    if psbt.xpubs:
        given = {
            (xpub_text(k, wallet.network), bytes(d.fingerprint).hex(), tuple(d.derivation))
            for k, d in psbt.xpubs.items()
        }
        pinned = {(k.xpub, k.fingerprint, tuple(account_indexes(wallet.network))) for k in wallet.account_keys()}
        if given != pinned:
            raise BtcXpubMismatch("the PSBT's global xpubs are not exactly the pinned wallet's account keys")
    for i, inp in enumerate(psbt.inputs):
        if inp.partial_sigs or inp.final_scriptwitness is not None or inp.final_scriptsig is not None:
            raise BtcBatchInvalid(f"input {i} is already signed or finalized; a batch carries an unsigned PSBT")
        taproot = (inp.taproot_bip32_derivations, inp.taproot_scripts, inp.taproot_sigs)
        if inp.redeem_script is not None or any(taproot) or inp.taproot_internal_key or inp.taproot_merkle_root:
            raise BtcForeignInput(f"input {i} is not a native P2WSH input of the wallet")
    known = {GLOBAL_TX_MODIFIABLE}  # read by check_fixed: only "nothing modifiable" gets here
    if set(psbt.unknown) - known or any(x.unknown for x in [*psbt.inputs, *psbt.outputs]):
        raise BtcBatchInvalid("the PSBT carries fields this signer does not know")


def check_fixed(psbt: Any) -> None:
    """A PSBT version 2 spells a fixed transaction: PSBT_GLOBAL_TX_MODIFIABLE absent or 0 (BIP-370: inputs or
    outputs that may still be added or removed, or a SIGHASH_SINGLE pairing to keep, mean the transaction is not
    final, and a signature would then commit to one that is not the one shown), and no input with a required
    time or height locktime: the locktime is the fallback locktime, shown and checked as a version 0 PSBT's
    (embit builds the transaction it signs from the fallback locktime alone)."""
    flags = psbt.unknown.get(GLOBAL_TX_MODIFIABLE)
    if flags is not None and flags != b"\x00":
        raise BtcTxFormInvalid(
            f"the PSBT's transaction is still modifiable (PSBT_GLOBAL_TX_MODIFIABLE {flags.hex()}): inputs or "
            "outputs could be added after signing; a signer signs a fixed transaction"
        )
    for i, inp in enumerate(psbt.inputs):
        for key, what in ((IN_REQUIRED_TIME_LOCKTIME, "time"), (IN_REQUIRED_HEIGHT_LOCKTIME, "height")):
            if key in inp.unknown:
                value = int.from_bytes(inp.unknown[key], "little")
                raise BtcTxFormInvalid(
                    f"input {i} requires a {what} locktime of {value}: a batch's locktime is its fallback "
                    "locktime alone, shown before signing"
                )


def xpub_text(key: Any, network: str) -> str:
    return str(key.to_base58(version=xpub_version(network)))


def check_locktime(locktime: int, network: str, now: int) -> None:
    if locktime >= LOCKTIME_THRESHOLD:
        if locktime > now:
            raise BtcTxFormInvalid(
                f"the transaction is locked until {when(locktime)}, in the future: it could not be mined now"
            )
        return
    if network == "mainnet":
        height, at = MAINNET_ANCHOR
        bound = height + max(0, now - at) // 540 + HEIGHT_SLACK
    else:
        bound = TEST_MAX_HEIGHT
    if locktime > bound:
        raise BtcTxFormInvalid(
            f"the transaction is locked until block {locktime}, far ahead (this signer allows up to {bound})"
        )


def check_inputs(psbt: Any, wallet: BtcColdWallet) -> tuple[Spend, ...]:
    outpoints = [f"{bytes(inp.txid).hex()}:{inp.vout}" for inp in psbt.inputs]
    if not outpoints:
        raise BtcBatchInvalid("the transaction spends nothing")
    for point in outpoints:
        if outpoints.count(point) > 1:
            raise BtcDuplicateInput(f"the transaction spends {point} twice")
    pairs = zip(psbt.inputs, outpoints, strict=True)
    return tuple(_input(i, inp, point, wallet) for i, (inp, point) in enumerate(pairs))


def _input(i: int, inp: Any, point: str, wallet: BtcColdWallet) -> Spend:
    if inp.non_witness_utxo is None or inp.witness_utxo is None:
        missing = "previous transaction (non_witness_utxo)" if inp.non_witness_utxo is None else "witness_utxo"
        raise BtcUtxoMissing(f"input {i} ({point}) lacks its {missing}: both are needed to know what it spends")
    prev = inp.non_witness_utxo
    if bytes(prev.txid()) != bytes(inp.txid):
        raise BtcUtxoMismatch(f"input {i}: the previous transaction given is not {point.split(':')[0]}")
    if inp.vout >= len(prev.vout):
        raise BtcUtxoMismatch(f"input {i}: the previous transaction has no output {inp.vout}")
    spent = prev.vout[inp.vout]
    if spent.value != inp.witness_utxo.value or spent.script_pubkey.data != inp.witness_utxo.script_pubkey.data:
        raise BtcUtxoMismatch(
            f"input {i}: its witness_utxo says {inp.witness_utxo.value} sat, but output {point} of the previous "
            f"transaction holds {spent.value} sat to another or the same script: the fee would be misjudged"
        )
    if inp.sighash_type not in (None, SIGHASH_ALL):
        raise BtcSighashForbidden(
            f"input {i} asks for sighash {inp.sighash_type:#x}; this signer signs SIGHASH_ALL only"
        )
    branch, index = derivation(inp.bip32_derivations, wallet, f"input {i}", BtcForeignInput)
    if branch not in (0, 1):
        raise BtcForeignInput(f"input {i}: branch {branch} is not the wallet's receive (0) or change (1) branch")
    script = wallet.witness_script(branch, index)
    if inp.witness_script is None or bytes(inp.witness_script.data) != script:
        raise BtcForeignInput(f"input {i}: its witness script is not the wallet's at {branch}/{index}")
    if bytes(spent.script_pubkey.data) != p2wsh(script):
        raise BtcForeignInput(f"input {i}: the output it spends is not the wallet's address at {branch}/{index}")
    return Spend(point, int(spent.value), branch, index)


def derivation(derivations: Any, wallet: BtcColdWallet, what: str, error: type[SignerError]) -> tuple[int, int]:
    """The (branch, index) at which every owner's key is listed, one derivation per owner and no other, each
    pubkey re-derived from the pinned xpub; ``error`` otherwise."""
    owners = {k.fingerprint: k for k in wallet.account_keys()}
    account = account_indexes(wallet.network)
    seen: dict[str, tuple[int, int]] = {}
    for pub, d in derivations.items():
        fingerprint = bytes(d.fingerprint).hex()
        path = list(d.derivation)
        if fingerprint not in owners or fingerprint in seen:
            raise error(f"{what}: a key of fingerprint {fingerprint} is not one of the wallet's owners, or twice")
        if len(path) != 6 or path[:4] != account:
            raise error(f"{what}: a derivation path is not below the {wallet.network} multisig account")
        branch, index = path[4], path[5]
        if index >= GAP_LIMIT:
            raise error(f"{what}: index {index} is beyond the gap limit of {GAP_LIMIT}")
        if branch > 1:
            raise error(f"{what}: branch {branch} is neither receive (0) nor change (1)")
        if bytes(pub.sec()) != derived_pubkey(wallet.network, owners[fingerprint].xpub, branch, index):
            raise error(f"{what}: the key listed for {fingerprint} is not its xpub's at {branch}/{index}")
        seen[fingerprint] = (branch, index)
    if set(seen) != set(owners) or len(set(seen.values())) != 1:
        raise error(f"{what}: the derivations do not list every owner's key at one branch and index")
    return next(iter(seen.values()))


def dust_limit(script: bytes) -> int:
    """Bitcoin Core's dust threshold at its default 3 sat/vB: what spending the output would cost."""
    size = 8 + 1 + len(script)
    witness = len(script) in (22, 34) and script[0] in (0x00, *range(0x51, 0x61)) and script[1] == len(script) - 2
    size += 32 + 4 + 1 + 107 // 4 + 4 if witness else 32 + 4 + 1 + 107 + 4
    return 3 * size


def check_outputs(psbt: Any, wallet: BtcColdWallet, batch: BtcBatch) -> tuple[int, int] | None:
    outputs = [(bytes(o.script_pubkey.data), int(o.value)) for o in psbt.tx.vout]
    for n, (script, value) in enumerate(outputs):
        if script[:1] == b"\x6a":
            raise BtcOutputForbidden(f"output {n} is an OP_RETURN: a batch pays withdrawals and change only")
        if value == 0:
            raise BtcOutputForbidden(f"output {n} pays nothing")
        if value < dust_limit(script):
            raise BtcOutputForbidden(f"output {n} pays {value} sat, below the dust limit of {dust_limit(script)} sat")
    wanted = [(bitcoin_script(batch.network, w.destination), w.amount) for w in batch.withdrawals]
    left = list(range(len(outputs)))
    for k, want in enumerate(wanted):
        match = next((n for n in left if outputs[n] == want), None)
        if match is None:
            w = batch.withdrawals[k]
            raise BtcOutputsMismatch(
                f"withdrawal {k + 1} ({w.id}): no output pays exactly {format_amount(w.amount, 8)} BTC to "
                f"{w.destination}"
            )
        left.remove(match)
    if len(left) > 1:
        raise BtcOutputsMismatch(f"{len(left)} outputs are not withdrawals; a batch has at most one change output")
    if not left:
        return None
    n = left[0]
    scope = psbt.outputs[n]
    if not scope.bip32_derivations:
        raise BtcOutputsMismatch(f"output {n} pays {outputs[n][1]} sat to a script that is not any withdrawal's")
    branch, index = derivation(scope.bip32_derivations, wallet, f"change output {n}", BtcChangeInvalid)
    if branch != 1:
        raise BtcChangeInvalid(f"change output {n} is on branch {branch}; change goes to branch 1")
    if outputs[n][0] != wallet.script_pubkey(1, index):
        raise BtcChangeInvalid(f"change output {n} does not pay the wallet's change address 1/{index}")
    if scope.witness_script is not None and bytes(scope.witness_script.data) != wallet.witness_script(1, index):
        raise BtcChangeInvalid(f"change output {n}: its witness script is not the wallet's at 1/{index}")
    return outputs[n][1], index


def _compact(n: int) -> int:
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5


def vsize(threshold: int, owners: int, inputs: int, scripts: Sequence[bytes]) -> int:
    """The virtual size of the finalized transaction: every input an M-of-N P2WSH spend with signatures of the
    largest DER size (72 bytes with the sighash byte), so the fee rate is never over-estimated by much."""
    base = 4 + _compact(inputs) + inputs * (32 + 4 + 1 + 4) + _compact(len(scripts)) + 4
    base += sum(8 + _compact(len(s)) + len(s) for s in scripts)
    script = 3 + 34 * owners
    witness = inputs * (_compact(threshold + 2) + 1 + threshold * 73 + _compact(script) + script)
    weight = 4 * base + 2 + witness
    return (weight + 3) // 4


def check_fee(rule: AssetRule, fee: int, size: int, sent: int) -> None:
    if fee < 0:
        raise BtcBatchInvalid(f"the outputs spend {-fee} sat more than the inputs hold")
    if rule.max_fee is None or rule.max_fee_rate is None:
        raise BtcFeeTooHigh("the policy sets no max_fee or max_fee_rate for this asset")
    if fee > rule.max_fee:
        raise BtcFeeTooHigh(
            f"the fee is {format_amount(fee, 8)} BTC, over the policy's max_fee of {format_amount(rule.max_fee, 8)} BTC"
        )
    rate = -(-fee // size)
    if rate > rule.max_fee_rate:
        raise BtcFeeTooHigh(f"the fee rate is {rate} sat/vB (over {size} vB), over the policy's {rule.max_fee_rate}")
    if fee * 100 >= sent * MAX_FEE_SHARE:
        raise BtcFeeTooHigh(
            f"the fee of {format_amount(fee, 8)} BTC is {MAX_FEE_SHARE}% or more of the "
            f"{format_amount(sent, 8)} BTC sent"
        )


def describe_btc(found: BtcReview, policy: Policy, policy_version: int) -> list[str]:
    """What the operator checks against the ticket before signing; every string from the file escaped."""
    batch = found.batch
    lines = [
        f"batch        {batch.id}" + (f"  (FEE BUMP of batch {batch.replaces})" if batch.replaces else ""),
        f"cold wallet  Bitcoin {batch.network}, descriptor …#{batch.descriptor.rsplit('#', 1)[-1]}",
        f"policy       v{policy_version} ({batch.policy_hash})",
        f"created      {when(batch.created_at)}",
        f"expires      {when(batch.expires_at)}",
        *(["psbt         version 2 (BIP-370)"] if found.psbt_version == 2 else []),
        "",
        f"{'#':>4}  {'asset':<6} {'amount (BTC)':>18}  {'destination':<62}  label / withdrawal id",
    ]
    for i, w in enumerate(batch.withdrawals, 1):
        lines.append(f"{i:>4}  {w.asset:<6} {format_amount(w.amount, 8):>18}  {w.destination:<62}  {escape(w.label)}")
        lines.append(f"{'':>4}  {'':<6} {'':>18}  {'':<62}  withdrawal {w.id}")
        payout = found.payouts.get(w.id)
        if w.customer is not None and payout is not None:
            lines.append(f"{'':>4}  {'':<6} {'':>18}  {'':<62}  customer {escape(w.customer)}: {escape(payout.why)}")
    lines += ["", f"total sent   {format_amount(found.sent, 8)} BTC in {len(batch.withdrawals)} outputs"]
    if found.change is None:
        lines.append("change       none")
    else:
        value, index = found.change
        lines.append(f"change       {format_amount(value, 8)} BTC to the wallet's change address 1/{index}")
    inputs = sum(s.value for s in found.inputs)
    lines.append(f"inputs       {format_amount(inputs, 8)} BTC from {len(found.inputs)} of the wallet's outputs")
    rate = -(-found.fee // found.vsize)
    lines.append(f"fee          {format_amount(found.fee, 8)} BTC, {rate} sat/vB over {found.vsize} vB (estimated)")
    locktime = found.locktime
    if locktime == 0:
        lines.append("locktime     none")
    elif locktime < LOCKTIME_THRESHOLD:
        lines.append(f"locktime     block {locktime}")
    else:
        lines.append(f"locktime     {when(locktime)}")
    lines += ["", f"txid         {found.txid}"]
    return lines
