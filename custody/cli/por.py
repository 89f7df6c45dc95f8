"""`custody por …`: proof of reserves for auditors and customers."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import click

from custody.chain.bitcoin import BitcoinNode
from custody.chain.ethereum import EthereumNode
from custody.cli.common import bitcoin_node, config_option, daemon_passphrase, node_for, open_store, passphrase_option
from custody.clock import SystemClock
from custody.keys import load_hot_account, load_hot_bitcoin_accounts
from custody.por import btcreserves, shards
from custody.por import snapshot as snapshots
from custody.por.proofs import AccountProof, extract
from custody.por.publish import publish
from custody.por.verify import verify
from signer.cliutil import read_file
from signer.porstatement import describe, parse_statement


@click.group()
def por() -> None:
    """Proof of reserves: liabilities tree, reserves at one block, proof of control, verification."""


@por.command("snapshot")
@click.option("--liabilities", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--block", type=int, default=None, help="Read reserves at this block (default: the newest).")
@click.option("--decimals", multiple=True, help="SYMBOL=N: count this asset's liabilities in N decimals.")
@click.option(
    "--assets",
    default=None,
    help="SYMBOL,SYMBOL: the assets this snapshot covers (default: every asset of the policy, each of which "
    "must then have a column in the liabilities file).",
)
@config_option
@passphrase_option
def snapshot(
    liabilities: Path,
    out_dir: Path,
    block: int | None,
    decimals: tuple[str, ...],
    assets: str | None,
    config_path: Path,
    passphrase_file: Path | None,
) -> None:
    """Build the tree from the balances CSV, read every custody wallet at one block, sign with the hot key."""
    settings, store = open_store(config_path)
    node = node_for(settings, "the reserves are read from a node")
    secret = daemon_passphrase(passphrase_file)
    hot = load_hot_account(settings.data_dir, secret)
    bitcoin = None
    if settings.bitcoin.rpc_url:  # the Bitcoin wallets' coins, for a Bitcoin asset of the policy
        bitcoin = btcreserves.BitcoinSource(
            bitcoin_node(settings), load_hot_bitcoin_accounts(settings.data_dir, secret)
        )
    statement = snapshots.snapshot(
        store,
        node,
        hot,
        liabilities,
        out_dir,
        SystemClock().now(),
        block=block,
        decimals=snapshots.load_decimals(decimals),
        only=None if assets is None else tuple(a.strip() for a in assets.split(",") if a.strip()),
        progress=lambda line: click.echo(line, err=True),
        bitcoin=bitcoin,
    )
    for line in describe(statement):
        click.echo(line)
    click.echo(
        f"\nwrote {out_dir / snapshots.STATEMENT}, {out_dir / snapshots.PROOFS} and {out_dir / snapshots.REPORT}"
    )
    if statement.wallets("safe"):
        click.echo("the Safe's owners sign it with `signer por sign`; add their files with `custody por attach`")
    if (out_dir / btcreserves.COLD_PSBT).exists():
        click.echo(
            f"the Bitcoin cold wallet's owners sign {out_dir / btcreserves.COLD_PSBT} with `signer por sign-bitcoin "
            "STATEMENT PSBT`; add their signed PSBTs with `custody por attach`"
        )


@por.command("proof")
@click.argument("account_id")
@click.option(
    "--snapshot", "snapshot_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True)
)
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
def proof(account_id: str, snapshot_dir: Path, out: Path) -> None:
    """Cut one account's proof out of the snapshot's indexed proofs file."""
    found, assets = extract(snapshot_dir / snapshots.PROOFS, account_id)
    out.write_bytes(found.to_bytes(assets))
    where = f"leaf {found.index}" if isinstance(found, AccountProof) else f"{len(found.pieces)} pieces"
    click.echo(f"wrote the proof of {account_id} ({where}) to {out}")


@por.command("export-proofs")
@click.option(
    "--snapshot", "snapshot_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True)
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--prefix-digits",
    type=click.IntRange(1, 6),
    default=None,
    help="Hex digits of the shard names (default: a few hundred accounts a shard).",
)
def export_proofs(snapshot_dir: Path, out_dir: Path, prefix_digits: int | None) -> None:
    """Write every customer's proof as static files to publish: entry shards named by a hash only the customer
    can compute (from their account id and proof key), the tree in subtree files, and a manifest of their
    SHA-256."""
    done = shards.export(
        snapshot_dir / snapshots.PROOFS,
        out_dir,
        prefix_digits=prefix_digits,
        progress=lambda line: click.echo(line, err=True),
    )
    click.echo(
        f"wrote the proofs of {done.accounts} accounts in {done.shards} entry shards and {done.tree_files} tree "
        f"files ({done.bytes / 2**20:,.1f} MiB) and {done.manifest}"
    )


@por.command("shard-proof")
@click.argument("statement", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--shards", "shards_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--account", "account_id", required=True)
@click.option("--key", "proof_key", required=True, help="Your proof key for this snapshot (64 hex), from the exchange.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
def shard_proof(statement: Path, shards_dir: Path, account_id: str, proof_key: str, out: Path) -> None:
    """Take your own proof out of the published shards (the one the manifest lists, by its SHA-256); check it
    with `custody por verify STATEMENT --proof OUT`."""
    st = parse_statement(read_file(statement))
    try:
        salt = bytes.fromhex(proof_key)
    except ValueError:
        salt = b""
    if len(salt) != 32:
        raise click.UsageError("--key: the proof key is 64 hex digits")
    published = shards.Published(read_file(shards_dir / shards.MANIFEST), lambda name: read_file(shards_dir / name))
    assets = [a["symbol"] for a in st.claims["assets"]]
    found = shards.proof_from_shards(published, account_id, salt)
    out.write_bytes(found.to_bytes(assets))
    click.echo(f"wrote the proof of {account_id} ({len(found.pieces)} pieces, from the shards) to {out}")


@por.command("publish")
@click.option(
    "--snapshot", "snapshot_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True)
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False))
def publish_cmd(snapshot_dir: Path, out_dir: Path) -> None:
    """Write the public page where customers check their proof in the browser: a static folder (HTML, CSS,
    one script, the statement; nothing from another host) to put on the exchange's website as it is. The
    statement must carry every signature first (`custody por attach`): the page cannot check them."""
    done = publish(snapshot_dir, out_dir)
    click.echo(f"wrote {', '.join(done.files)} to {done.out_dir}")
    click.echo(
        f"statement hash {done.statement.hash.hex()}, liability root {done.statement.claims['liabilities']['root']}"
    )
    click.echo("publish the folder as it is (over https, or for download); customers open index.html")


@por.command("attach")
@click.argument("statement", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("signatures", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
def attach(statement: Path, signatures: tuple[Path, ...]) -> None:
    """Add Safe owners' signature files (from `signer por sign`) and Bitcoin owners' signed reserve PSBTs (from
    `signer por sign-bitcoin`) to the statement."""
    updated, attached = snapshots.attach(statement, [read_file(s) for s in signatures])
    for what in attached:
        click.echo(f"attached {what}")
    for safe in updated.wallets("safe"):
        have = {s.owner for s in updated.eip1271 if s.wallet == safe["address"]}
        click.echo(f"Safe {safe['address']}: {signatures_count(len(have), safe['threshold'])}")


def signatures_count(have: int, needs: int) -> str:
    """How many owners' signatures a Safe has against its threshold, in words that stay true past it."""
    if have > needs:
        return f"{have} signatures; it needs {needs}"
    missing = f"; {needs - have} more to attach" if have < needs else ""
    return f"{have} of the {needs} signatures it needs{missing}"


@por.command("verify")
@click.argument("statement", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--proof", "proof_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None)
@click.option(
    "--rpc", default=None, help="A node to check decimals, balances, block hash and the Safe's EIP-1271 answer at."
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="The policy bundle the statement cites (default: the policy.json beside the statement, if there is one); "
    "--rpc needs it.",
)
@click.option(
    "--btc-rpc",
    default=None,
    help="A bitcoind (http://USER:PASSWORD@HOST:PORT) to check the Bitcoin coins at (a statement with Bitcoin).",
)
@click.option(
    "--no-rpc",
    "offline",
    is_flag=True,
    help="Check only what needs no node (signatures, sums, the proof) and exit 0 if that holds; the on-chain "
    "balances, block hash, decimals and the Safe's owners are then not checked.",
)
def verify_cmd(
    statement: Path,
    proof_file: Path | None,
    rpc: str | None,
    policy_file: Path | None,
    btc_rpc: str | None,
    offline: bool,
) -> None:
    """Check a statement (and an account's proof); any failure exits 1 with the reason. Exit 0 only if
    everything holds: without --rpc the on-chain balances are not checked, which exits 1 too unless --no-rpc
    says that an offline check is what was wanted."""
    if (rpc or btc_rpc) and offline:
        raise click.UsageError("--rpc and --btc-rpc exclude --no-rpc")
    raw = read_file(statement)
    parsed = parse_statement(raw)
    node = EthereumNode(rpc, parsed.claims["chain_id"]) if rpc else None
    btc = btc_node(btc_rpc) if btc_rpc else None
    if btc is not None and parsed.format != 4:
        raise click.UsageError("--btc-rpc: this statement has no Bitcoin wallets")
    if policy_file is None and (statement.parent / snapshots.POLICY).is_file():
        policy_file = statement.parent / snapshots.POLICY  # only its hash is trusted: the statement names it
    policy = read_file(policy_file) if policy_file else None
    for line in verify(raw, read_file(proof_file) if proof_file else None, node, policy, btc):
        click.echo(f"ok  {line}")
    unchecked = ([] if node else [UNCHECKED]) + ([BTC_UNCHECKED] if parsed.format == 4 and btc is None else [])
    for line in unchecked:
        click.echo(f"NOT CHECKED  {line}")
    if unchecked and not offline:
        click.echo(
            "not verified: the reserves were not checked on chain; give --rpc URL (a node of the statement's "
            "chain)"
            + (" and --btc-rpc URL (a bitcoind of its network)" if parsed.format == 4 else "")
            + ", or --no-rpc to accept the checks above alone",
            err=True,
        )
        sys.exit(1)


def btc_node(url: str) -> BitcoinNode:
    """The bitcoind of ``--btc-rpc``: its login comes from the URL's user and password, never printed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.UsageError("--btc-rpc: give it as http://USER:PASSWORD@HOST:PORT")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    bare = urlunsplit((parts.scheme, host, parts.path, "", ""))
    return BitcoinNode(bare, unquote(parts.username or ""), unquote(parts.password or ""))


UNCHECKED = (
    "the wallets' balances, the block hash, the tokens' decimals and the Safe's owners on chain (no --rpc): "
    "the reserves are as the statement claims"
)
BTC_UNCHECKED = (
    "the Bitcoin coins' existence at the snapshot block and the block hash (no --btc-rpc): the coins, their "
    "amounts and scripts are as the statement claims (their signatures were checked)"
)
