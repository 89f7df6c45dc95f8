"""Sealed secrets, keystores and the published BIP-39 / BIP-44 vectors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bip_utils import Bip32Secp256k1, EthAddrEncoder

from policies.canonical import canonical_bytes
from signer.errors import KeystoreDamaged, MnemonicInvalid, WrongPassphrase
from signer.keystore import create_keystore, load_keystore, mnemonic_entropy, seed_from_mnemonic, unlock
from signer.sealed import open_sealed, seal

ABANDON = "abandon " * 11 + "about"
PASS = "keystore pass phrase"


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch):
    monkeypatch.setenv("SIGNER_PASSPHRASE", PASS)


def signer(*args, ok: bool = True, stdin: str | None = None):
    from tests.cli_helpers import signer as run

    return run(*args, ok=ok, stdin=stdin)


def test_bip39_and_bip44_published_vectors():
    # BIP-39 reference vectors (Trezor), passphrase "TREZOR"
    assert seed_from_mnemonic(ABANDON, "TREZOR").hex() == (
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"
    )
    # the well-known first Ethereum account of the "abandon … about" mnemonic
    card = load_keystore(create_keystore("v", ABANDON, "pw", n=2**15)).card
    assert card.owner_address == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"


@pytest.mark.parametrize(
    ("words", "why"),
    [
        ("abandon " * 12, "checksum"),
        ("abandon " * 11 + "zebraa", "not in the English"),
        ("abandon " * 5, "number of words"),
    ],
)
def test_bad_mnemonics_get_one_clear_reason_without_echoing_words(words, why):
    with pytest.raises(MnemonicInvalid) as info:
        seed_from_mnemonic(words)
    assert why in info.value.message and "zebraa" not in info.value.message


def test_sealing_round_trips_and_refuses_wrong_passphrase_label_or_damage():
    data = seal(b"secret bytes", "pw", "thing", n=2**15)
    assert b"secret" not in data
    assert open_sealed(data, "pw", "thing") == b"secret bytes"
    with pytest.raises(WrongPassphrase):
        open_sealed(data, "PW", "thing")
    with pytest.raises(KeystoreDamaged, match="not a 'other'"):
        open_sealed(data, "pw", "other")
    doc = json.loads(data)
    doc["label"] = "other"  # relabelling is caught by the associated data even with the right label asked
    with pytest.raises(WrongPassphrase):
        open_sealed(canonical_bytes(doc), "pw", "other")
    doc = json.loads(data)
    doc["kdf"]["n"] = 2**10
    with pytest.raises(KeystoreDamaged, match="weaker"):
        open_sealed(canonical_bytes(doc), "pw", "thing")
    with pytest.raises(KeystoreDamaged):
        open_sealed(data[:-10], "pw", "thing")


def test_keystore_unlock_and_damage():
    ks = load_keystore(create_keystore("alice", ABANDON, "pw", n=2**15))
    key = unlock(ks, "pw")
    assert "abandon" not in repr(key) and key.card("alice") == ks.card
    with pytest.raises(WrongPassphrase):
        unlock(ks, "nope")
    with pytest.raises(KeystoreDamaged):
        load_keystore(b'{"kind":"something-else"}')


VECTORS = json.loads((Path(__file__).parent / "vectors" / "bip39-trezor.json").read_text())


def _address_from_xprv(xprv: str) -> str:
    """BIP-44 m/44'/60'/0'/0/0 from the published master key: an independent route to the address."""
    node = Bip32Secp256k1.FromExtendedKey(xprv).DerivePath("m/44'/60'/0'/0/0")
    return str(EthAddrEncoder.EncodeKey(node.PublicKey().KeyObject()))


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v[1].split()[0] + str(len(v[1].split())))
def test_restoring_published_bip39_vectors_gives_their_seeds_and_addresses(tmp_path, vector):
    entropy, words, seed, xprv = vector
    ks = tmp_path / "k"
    r = signer(
        "key", "restore", "--name", "v", "--out", ks, "--bip39-passphrase", stdin=f"{words}\n{VECTORS['passphrase']}\n"
    )
    card = load_keystore(ks.read_bytes()).card
    assert card.owner_address == _address_from_xprv(xprv) and card.owner_address in r.output
    key = unlock(load_keystore(ks.read_bytes()), PASS)
    assert seed_from_mnemonic(words, VECTORS["passphrase"]).hex() == seed
    assert key.backup_shares(2, 3)  # the entropy was kept for backups
    assert mnemonic_entropy(words).hex() == entropy
    assert Bip32Secp256k1.FromSeed(bytes.fromhex(seed)).PrivateKey().ToExtended() == xprv


def test_restoring_the_abandon_mnemonic_gives_the_well_known_address(tmp_path):
    v = VECTORS["bip44_ethereum"]
    signer("key", "restore", "--name", "a", "--out", tmp_path / "k", stdin=v["mnemonic"] + "\n")
    assert load_keystore((tmp_path / "k").read_bytes()).card.owner_address == v["address"]


@pytest.mark.parametrize(
    ("stdin", "fragment"),
    [
        ("abandon " * 12 + "\n", "checksum"),
        ("abandon " * 11 + "qwertyx\n", "not in the English"),
        ("\n", "number of words"),
    ],
)
def test_restore_refuses_a_bad_mnemonic_with_one_line_and_writes_nothing(tmp_path, stdin, fragment):
    r = signer("key", "restore", "--name", "a", "--out", tmp_path / "k", stdin=stdin, ok=False)
    assert r.exit_code == 1 and fragment in r.output and "qwertyx" not in r.output
    assert not (tmp_path / "k").exists()


def test_slip39_backup_and_recovery_round_trip(tmp_path):
    signer("key", "restore", "--name", "a", "--out", tmp_path / "k", stdin=VECTORS["vectors"][5][1] + "\n")
    out = signer("key", "backup", tmp_path / "k", "--shares", 3, "--threshold", 2).output
    shares = [line.strip() for line in out.splitlines() if len(line.split()) >= 20]
    assert len(shares) == 3
    original = load_keystore((tmp_path / "k").read_bytes()).card
    signer("key", "recover", "--name", "a", "--out", tmp_path / "r", stdin=f"{shares[0]}\n{shares[2]}\n")
    assert load_keystore((tmp_path / "r").read_bytes()).card == original
    r = signer("key", "recover", "--name", "a", "--out", tmp_path / "one", stdin=shares[1] + "\n", ok=False)
    assert r.exit_code == 1 and "[mnemonic_invalid]" in r.output and not (tmp_path / "one").exists()
    words = shares[1].split()
    words[5] = "academic" if words[5] != "academic" else "acid"
    r = signer(
        "key", "recover", "--name", "a", "--out", tmp_path / "bad", stdin=f"{shares[0]}\n{' '.join(words)}\n", ok=False
    )
    assert r.exit_code == 1 and "checksum" in r.output
    assert shares[0] not in r.output


def test_wrong_passphrase_or_damaged_keystore_is_one_line_and_exit_1(tmp_path, monkeypatch):
    signer("key", "restore", "--name", "a", "--out", tmp_path / "k", stdin=VECTORS["vectors"][0][1] + "\n")
    monkeypatch.setenv("SIGNER_PASSPHRASE", "not it")
    r = signer("key", "backup", tmp_path / "k", "--shares", 3, "--threshold", 2, ok=False)
    assert r.exit_code == 1 and r.output.strip().count("\n") == 0 and "[wrong_passphrase]" in r.output
    (tmp_path / "bad").write_bytes((tmp_path / "k").read_bytes()[:-40])
    r = signer("key", "show", tmp_path / "bad", ok=False)
    assert r.exit_code == 1 and "[keystore_damaged]" in r.output


def test_key_new_asks_for_words_back_and_writes_nothing_on_a_mismatch(tmp_path):
    """Run as an operator would: read the words off the screen, answer the three questions."""
    import subprocess
    import sys

    def run(answer_right: bool, out: Path) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signer.cli", "key", "new", "--name", "n", "--out", str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "SIGNER_PASSPHRASE": PASS},
        )
        words: list[str] = []
        answers = []
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[0].rstrip(".").isdigit():
                words.append(parts[1])
            if line.startswith("To check your paper"):
                break
        for _ in range(3):
            prompt = ""
            while not prompt.endswith(": "):  # "word 7: " or "word 17: ", with no newline after it
                char = proc.stdout.read(1)
                assert char, prompt
                prompt += char
            pos = int(prompt.split()[1].rstrip(":"))
            wrong = "zoo" if words[pos - 1] != "zoo" else "abandon"  # "zoo" is the right word once in 2048
            answers.append(words[pos - 1] if answer_right else wrong)
            proc.stdin.write(answers[-1] + "\n")
            proc.stdin.flush()
            if not answer_right:
                break
        rest, _ = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, rest)

    ok = run(True, tmp_path / "good")
    assert ok.returncode == 0, ok.stdout
    assert load_keystore((tmp_path / "good").read_bytes()).card.name == "n"
    bad = run(False, tmp_path / "bad")
    assert bad.returncode == 1 and "does not match" in bad.stdout and not (tmp_path / "bad").exists()


def test_new_secrets_are_sealed_with_scrypt_n_2_17_by_default(tmp_path, production_kdf):
    """The product's cost (the rest of the suite seals at the accepted minimum, see tests/conftest.py)."""
    from custody.keys import create_daemon_keys

    signer("key", "new", "--name", "x", "--out", tmp_path / "x.keystore", "--no-confirm")
    (tmp_path / "daemon").mkdir()
    create_daemon_keys(tmp_path / "daemon", PASS)
    for sealed in (
        tmp_path / "x.keystore",
        tmp_path / "daemon" / "identity.sealed",
        tmp_path / "daemon" / "hot-seed.sealed",
    ):
        kdf = json.loads(sealed.read_text())
        kdf = kdf.get("kdf") or kdf["sealed_seed"]["kdf"]
        assert (kdf["n"], kdf["r"], kdf["p"]) == (2**17, 8, 1), sealed
