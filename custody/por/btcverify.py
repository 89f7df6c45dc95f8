"""The Bitcoin half of ``custody por verify`` (statement format 4).

Offline (``check_control``): each Bitcoin wallet's reserve PSBT is byte for byte the BIP-127 transaction rebuilt
from the claims (input 0 the commitment to this statement's hash, then the listed coins, one output of their
total to OP_TRUE), and every coin has valid SIGHASH_ALL signatures (BIP-143, checked here with embit) from a
threshold of the keys its descriptor derives at the coin's path; the coin's script is that descriptor's there.
The node's ``testmempoolaccept`` cannot judge it: input 0 does not exist, by design.

Against a node (``check_chain``, ``--btc-rpc``): the node is on the statement's network and the snapshot block
(height and hash) is in its best chain; then each coin:

- still unspent (``gettxout``): the amount and script are the statement's, and it was created at the height the
  statement gives, at or before the snapshot block (from its confirmations at the node's tip);
- spent since: the transaction that created it is in the block at the height the statement gives (at or before
  the snapshot block; ``getrawtransaction`` with that block's hash, no transaction index needed), with that
  output's amount and script, and the spend is found in a block after the snapshot block (the blocks from the
  snapshot to the tip are read once). A coin spent in no later block was already spent at the snapshot block,
  and is refused.

Trusted: the verifier's own node (a validating full node it chooses, not the exchange's) and its best chain.
Not proved: who holds the keys (the descriptor says which keys; the cold wallet's owners pinned it); coins of
the exchange not listed (a proof of reserves shows at least these coins, never all of them).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from custody.chain.bitcoin import NODE_CHAINS, BitcoinNode
from custody.errors import BitcoinNodeError, ProofInvalid
from policies.units import format_amount
from signer.porbtc import Coin, ReserveInvalid, check_signed, parse_psbt, wallets
from signer.porstatement import Statement

SAT = 10**8


def check_control(statement: Statement) -> list[str]:
    lines = []
    asset = statement.claims["bitcoin"]["asset"]
    for wallet, psbt in zip(wallets(statement.claims), statement.bip127, strict=True):
        try:
            n = check_signed(statement.hash, wallet, parse_psbt(psbt.psbt))
        except ReserveInvalid as exc:
            raise ProofInvalid(f"the {wallet.kind} Bitcoin wallet's reserve proof: {exc.message}") from None
        lines.append(
            f"{wallet.kind} Bitcoin wallet …#{wallet.descriptor[-8:]}: its BIP-127 reserve PSBT commits to this "
            f"statement and its {n} coins ({format_amount(wallet.balance, 8)} {asset}) are signed by a threshold "
            "of the descriptor's keys"
        )
    return lines


def check_chain(statement: Statement, node: BitcoinNode) -> list[str]:
    b = statement.claims["bitcoin"]
    height, block_hash = b["block"]["height"], b["block"]["hash"]
    chain = str(node.call("getblockchaininfo").get("chain"))
    if chain not in NODE_CHAINS[b["network"]]:
        raise ProofInvalid(f"the Bitcoin node is on {chain!r}, the statement on {b['network']}")
    if _block_hash(node, height) != block_hash:
        raise ProofInvalid(f"Bitcoin block {height} on this node is not the statement's {block_hash}")
    lines = [f"Bitcoin block {height} has the statement's hash {block_hash}"]
    tip = int(node.call("getblockcount"))
    tips = {str(node.call("getblockhash", tip)): tip}  # a tip's height, by hash (the tip may move meanwhile)
    found = wallets(statement.claims)
    spent = []
    for wallet in found:
        for coin in wallet.coins:
            if not _unspent(node, coin, height, tips):
                spent.append(coin)
    tip = int(node.call("getblockcount"))  # now: a coin gone since the first look was spent in a block up to here
    spends = _spends_after(node, height, tip, {c.outpoint for c in spent})
    for coin in spent:
        _created(node, coin, height)
        if coin.outpoint not in spends:
            raise ProofInvalid(
                f"coin {coin.outpoint} was already spent at Bitcoin block {height}: it was not part of the reserves"
            )
    for wallet in found:
        gone = [c for c in wallet.coins if c in spent]
        later = f"; {len(gone)} spent since, in blocks after it" if gone else ""
        lines.append(
            f"{wallet.kind} Bitcoin wallet …#{wallet.descriptor[-8:]}: {len(wallet.coins)} coins of "
            f"{format_amount(wallet.balance, 8)} {b['asset']} existed unspent at block {height}{later}"
        )
    return lines


def _block_hash(node: BitcoinNode, height: int) -> str | None:
    try:
        return str(node.call("getblockhash", height))
    except BitcoinNodeError:
        return None  # the node's chain is shorter


def _unspent(node: BitcoinNode, coin: Coin, height: int, tips: dict[str, int]) -> bool:
    """True if the coin is in the node's UTXO set now, created at the statement's height; False if it is not."""
    out = node.call("gettxout", coin.txid, coin.vout, False)
    if out is None:
        return False
    _same_output(coin, out["value"], out["scriptPubKey"]["hex"])
    best = str(out["bestblock"])
    if best not in tips:
        tips[best] = int(node.call("getblockheader", best)["height"])
    tip = tips[best]
    created = tip - int(out["confirmations"]) + 1
    if created != coin.height or created > height:
        raise ProofInvalid(
            f"coin {coin.outpoint} was created in block {created}; the statement says {coin.height}, at or before "
            f"the snapshot block {height}"
        )
    return True


def _same_output(coin: Coin, value: object, script: object) -> None:
    amount = Decimal(str(value)) * SAT
    if amount != coin.amount or str(script) != coin.script.hex():
        raise ProofInvalid(
            f"coin {coin.outpoint} holds {format_amount(int(amount), 8)} BTC to script {str(script)[:80]}; the "
            f"statement says {format_amount(coin.amount, 8)} BTC to {coin.script.hex()}"
        )


def _created(node: BitcoinNode, coin: Coin, height: int) -> None:
    """A spent coin: the transaction that made it is in the block at the statement's height, with that output."""
    where = _block_hash(node, coin.height)
    try:
        tx = node.call("getrawtransaction", coin.txid, True, where) if where else None
    except BitcoinNodeError:
        tx = None
    if tx is None:
        raise ProofInvalid(
            f"coin {coin.outpoint} is not unspent, and its transaction is not in block {coin.height} as the "
            "statement says: it did not exist at the snapshot block"
        )
    outs = [o for o in tx["vout"] if int(o["n"]) == coin.vout]
    if not outs:
        raise ProofInvalid(f"coin {coin.outpoint}: its transaction has no output {coin.vout}")
    _same_output(coin, outs[0]["value"], outs[0]["scriptPubKey"]["hex"])


def _spends_after(node: BitcoinNode, height: int, tip: int, wanted: Iterable[str]) -> set[str]:
    """Which of ``wanted`` are spent in the blocks after ``height`` up to ``tip`` (each block read once)."""
    left, found = set(wanted), set()
    for h in range(height + 1, tip + 1):
        if not left:
            break
        block = node.call("getblock", node.call("getblockhash", h), 2)
        for tx in block["tx"]:
            for vin in tx["vin"]:
                point = f"{vin.get('txid')}:{vin.get('vout')}"
                if point in left:
                    left.discard(point)
                    found.add(point)
    return found
