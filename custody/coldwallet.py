"""Creating the cold wallet: a Safe 1.4.1 proxy owned by the operators' owner keys.

The hot wallet sends the factory call (through the hot worker, so its nonce is allocated and the signed bytes
stored like any other). Afterwards the owners and threshold are read back from the chain and must be exactly
what was asked; only then is the Safe recorded, and the cold wallet file written for the signers to pin.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from custody import audit
from custody.chain import safe as safe_contract
from custody.chain.ethereum import EthereumNode
from custody.errors import Conflict, InvalidRequest
from custody.store.db import Store
from custody.store.models import ColdWallet, HotTransaction
from signer.coldwallet import ColdWallet as ColdWalletDoc

if TYPE_CHECKING:
    from custody.hotwallet import HotWorker

COLD_WALLET_FILE = "cold-wallet.json"


def create(
    store: Store,
    node: EthereumNode,
    worker: HotWorker,
    deployment: safe_contract.SafeDeployment,
    owners: list[str],
    threshold: int,
    daemon_key: str,
    data_dir: Path,
    *,
    salt: int = 0,
    timeout: float = 120.0,
) -> ColdWalletDoc:
    if len(set(owners)) != len(owners) or not owners:
        raise InvalidRequest("the owners must be one or more distinct addresses")
    if not 1 <= threshold <= len(owners):
        raise InvalidRequest(f"the threshold must be between 1 and the number of owners ({len(owners)})")
    with store.read() as s:
        existing = s.execute(select(ColdWallet.address)).scalar_one_or_none()
    if existing is not None:
        raise Conflict(f"a cold wallet already exists: {existing}", code="cold_wallet_exists")
    safe_contract.check_deployment(node, deployment)
    worker.ensure_wallet()
    data = safe_contract.create_call(deployment, owners, threshold, salt)
    address = safe_contract.predict_address(node, worker.address, deployment, data)
    if not node.code(address):  # else an earlier attempt's call was mined before the process stopped
        version = worker.sign_call(deployment.proxy_factory, 0, data)
        _wait_mined(store, worker, version.tx_hash, timeout)
    if not node.code(address):
        raise Conflict(f"creating the Safe failed: no contract at {address}", code="cold_wallet_failed")
    found = safe_contract.owners(node, address)
    found_threshold = safe_contract.threshold(node, address)
    if set(found) != set(owners) or found_threshold != threshold:
        raise Conflict(
            f"the Safe at {address} has owners {found} and threshold {found_threshold}, not what was asked",
            code="cold_wallet_mismatch",
        )
    doc = ColdWalletDoc(
        chain_id=node.chain_id,
        safe=address,
        owners=tuple(found),
        threshold=found_threshold,
        multisend=deployment.multisend_call_only,
        daemon_key=daemon_key,
    )
    now = worker.clock.now()
    with store.transaction() as s:
        s.add(
            ColdWallet(
                address=address,
                chain_id=node.chain_id,
                created_at=now,
                owners=json.dumps(found),
                threshold=found_threshold,
                multisend=deployment.multisend_call_only,
            )
        )
        audit.append(
            s,
            now,
            "coldwallet.created",
            address,
            {"owners": found, "threshold": found_threshold, "deployment": deployment._asdict(), "salt": salt},
        )
    (data_dir / COLD_WALLET_FILE).write_bytes(doc.to_bytes())
    return doc


def _wait_mined(store: Store, worker: HotWorker, tx_hash: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.follow()
        with store.read() as s:
            state = s.execute(select(HotTransaction.state).where(HotTransaction.tx_hash == tx_hash)).scalar_one()
        if state == "mined":
            return
        time.sleep(0.2)
    raise Conflict(
        f"the Safe creation {tx_hash} was not confirmed within {timeout:.0f} s; the worker keeps following it, "
        "run `custody cold create` again once it is mined",
        code="cold_wallet_pending",
    )
