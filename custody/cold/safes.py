"""Creating the cold wallet: a Safe 1.4.1 proxy owned by the operators' owner keys.

Only the canonical Safe 1.4.1 contracts are used (``signer.safecontracts``): the chain must have them, or
nothing is sent. The hot wallet sends the factory call (through its sender, ``custody.hot.sender``, so its
nonce is allocated and the signed bytes stored like any other). The Safe's address is known before anything is
sent: the factory's own answer (a simulated call) must equal the address the signers will derive offline from
the owners, threshold and salt nonce. Afterwards the owners (in setup order) and threshold are read back from
the chain and must be exactly what was asked; only then is the Safe recorded, and the cold wallet file written
for the signers to pin, after the signers' own parser has accepted it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from eth_utils.address import is_address, to_checksum_address
from sqlalchemy import select

from custody.chain import safe as safe_contract
from custody.chain.ethereum import EthereumNode
from custody.errors import (
    ColdWalletExists,
    ColdWalletFailed,
    ColdWalletMismatch,
    ColdWalletPending,
    InvalidRequest,
)
from custody.hot.sender import TransactionSender
from custody.ledger import audit
from custody.ledger.states import TxState
from custody.store.db import Store
from custody.store.models import ColdWallet, HotTransaction
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
    derived = safe_address(owners, threshold, salt_nonce)
    address = safe_contract.predict_address(node, sender.address, data)
    if address != derived:
        raise ColdWalletMismatch(
            f"the proxy factory on chain {node.chain_id} would create {address}, not {derived}, the address the "
            "signers derive for these owners, threshold and salt nonce; refusing to create it",
        )
    if not node.code(address):  # else an earlier attempt's call was mined before the process stopped
        version = sender.sign_call(PROXY_FACTORY, 0, data)
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
