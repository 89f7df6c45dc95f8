"""Creating the cold wallet: a Safe 1.4.1 proxy owned by the operators' owner keys.

Only the canonical Safe 1.4.1 contracts are used (``signer.safecontracts``): the chain must have them, or
nothing is sent. The hot wallet sends the factory call (through its sender, ``custody.hot.sender``, so its
nonce is allocated and the signed bytes stored like any other). The Safe's address is known before anything is
sent: the factory's own answer (a simulated call) must equal the address the signers will derive offline from
the owners, threshold and salt nonce. The hot wallet must hold enough to pay for the call before it is signed,
and a Safe already at that address that this daemon did not create is refused, naming it (another salt nonce
gives the same owners another address). Afterwards the owners (in setup order) and threshold are read back from
the chain and must be exactly what was asked; only then is the Safe recorded, and the cold wallet file written
for the signers to pin, after the signers' own parser has accepted it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import is_address, to_checksum_address
from hexbytes import HexBytes
from sqlalchemy import select

from custody.chain import safe as safe_contract
from custody.chain.ethereum import EthereumNode
from custody.errors import (
    ColdWalletExists,
    ColdWalletFailed,
    ColdWalletMismatch,
    ColdWalletPending,
    HotWalletUnfunded,
    InvalidRequest,
)
from custody.hot.sender import TransactionSender
from custody.ledger import audit
from custody.ledger.states import TxState
from custody.store.db import Store
from custody.store.models import ColdWallet, HotTransaction
from policies.units import format_amount
from signer.coldwallet import ColdWallet as ColdWalletDoc
from signer.coldwallet import parse_cold_wallet
from signer.safecontracts import MULTISEND_CALL_ONLY, PROXY_FACTORY, create_proxy_data, safe_address

COLD_WALLET_FILE = "cold-wallet.json"


def create(
    store: Store,
    node: EthereumNode,
    sender: TransactionSender,
    owners: list[str],
    threshold: int,
    daemon_key: str,
    data_dir: Path,
    *,
    salt_nonce: int = 0,
    timeout: float = 120.0,
    names: Mapping[str, str] | None = None,
) -> ColdWalletDoc:
    """Create the Safe with these owners, in this order (the order ``getOwners`` returns and the cold wallet
    file lists), this threshold and salt nonce; record it and write the file the signers pin."""
    if not owners or not all(is_address(o) for o in owners):
        raise InvalidRequest("the owners must be one or more Ethereum addresses")
    owners = [to_checksum_address(o) for o in owners]
    if len(set(owners)) != len(owners):
        raise InvalidRequest("the owners must be distinct addresses")
    if not 1 <= threshold <= len(owners):
        raise InvalidRequest(f"the threshold must be between 1 and the number of owners ({len(owners)})")
    if not 0 <= salt_nonce < 2**256:
        raise InvalidRequest("the salt nonce must be an integer in [0, 2**256)")
    with store.read() as s:
        existing = s.execute(select(ColdWallet.address)).scalar_one_or_none()
    if existing is not None:
        raise ColdWalletExists(f"a cold wallet already exists: {existing}")
    safe_contract.check_contracts(node)
    sender.ensure_wallet()
    data = create_proxy_data(owners, threshold, salt_nonce)
    address = safe_address(owners, threshold, salt_nonce)
    if node.code(address):
        # The factory refuses to create it twice ("Create2 call failed"). Either an earlier attempt of this
        # daemon was mined before the process stopped (then go on and record it), or someone else made it.
        if not _made_here(store, sender.address, data):
            raise ColdWalletExists(
                f"a Safe for these owners, threshold and salt nonce already exists at {address} (another daemon "
                f"or an earlier installation created it); to create a new one for the same owners, choose another "
                f"salt with --salt-nonce (now {salt_nonce})"
            )
    else:
        predicted = safe_contract.predict_address(node, sender.address, data)
        if predicted != address:
            raise ColdWalletMismatch(
                f"the proxy factory on chain {node.chain_id} would create {predicted}, not {address}, the address "
                "the signers derive for these owners, threshold and salt nonce; refusing to create it",
            )
        gas = node.estimate_gas(sender.address, PROXY_FACTORY, 0, data)
        check_funded(node, sender, gas)
        version = sender.sign_call(PROXY_FACTORY, 0, data, gas=gas)
        _wait_mined(store, sender, version.tx_hash, timeout)
    if not node.code(address):
        raise ColdWalletFailed(f"creating the Safe failed: no contract at {address}")
    found = safe_contract.owners(node, address)
    found_threshold = safe_contract.threshold(node, address)
    if found != owners or found_threshold != threshold:
        raise ColdWalletMismatch(
            f"the Safe at {address} has owners {found} and threshold {found_threshold}, not what was asked",
        )
    doc = ColdWalletDoc(
        chain_id=node.chain_id,
        safe=address,
        owners=tuple(owners),
        threshold=threshold,
        multisend=MULTISEND_CALL_ONLY,
        daemon_key=daemon_key,
        salt_nonce=salt_nonce,
    )
    raw = doc.to_bytes()
    parse_cold_wallet(raw)  # what the signers will check when they pin it
    now = sender.clock.now()
    with store.transaction() as s:
        s.add(
            ColdWallet(
                address=address,
                chain_id=node.chain_id,
                created_at=now,
                owners=json.dumps(owners),
                threshold=threshold,
                multisend=MULTISEND_CALL_ONLY,
                owner_names=json.dumps({to_checksum_address(a): n for a, n in (names or {}).items()}, sort_keys=True),
            )
        )
        audit.append(
            s,
            now,
            "coldwallet.created",
            address,
            {"owners": owners, "threshold": threshold, "salt_nonce": str(salt_nonce)},
        )
    (data_dir / COLD_WALLET_FILE).write_bytes(raw)
    return doc


def _made_here(store: Store, wallet: str, data: bytes) -> bool:
    """Whether this hot wallet signed this very factory call (these owners, threshold and salt nonce): then the
    Safe on chain is this daemon's own earlier attempt, mined before the process stopped."""
    with store.read() as s:
        raws = s.execute(
            select(HotTransaction.raw).where(
                HotTransaction.wallet == wallet,
                HotTransaction.withdrawal_id.is_(None),  # a plain call: neither a payment nor a batch
                HotTransaction.batch_id.is_(None),
            )
        ).scalars()
        for raw in raws:
            tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            if bytes(tx["to"]) == bytes.fromhex(PROXY_FACTORY[2:]) and bytes(tx["data"]) == data:
                return True
    return False


def check_funded(node: EthereumNode, sender: TransactionSender, gas: int) -> None:
    """Refuse before anything is signed when the hot wallet cannot pay for ``gas`` at the fee it would offer:
    the node would refuse the transaction ("insufficient funds") at every resend until the timeout."""
    max_fee = sender.fees().max_fee
    needed, held = gas * max_fee, node.balance(sender.address, None)
    if held < needed:
        raise HotWalletUnfunded(
            f"the hot wallet {sender.address} holds {format_amount(held, 18)} ETH; creating the Safe costs up to "
            f"{format_amount(needed, 18)} ETH ({gas} gas at {max_fee} wei per gas): fund the hot wallet with at "
            f"least {format_amount(needed - held, 18)} ETH more, then run `custody cold create` again"
        )


def _wait_mined(store: Store, sender: TransactionSender, tx_hash: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sender.follow()
        with store.read() as s:
            state = s.execute(select(HotTransaction.state).where(HotTransaction.tx_hash == tx_hash)).scalar_one()
        if state == TxState.MINED:
            return
        time.sleep(0.2)
    raise ColdWalletPending(
        f"the Safe creation {tx_hash} was not confirmed within {timeout:.0f} s; the worker keeps following it, "
        "run `custody cold create` again once it is mined",
    )
