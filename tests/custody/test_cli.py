"""`custody` and `signer` together: init, policy approval by quorum, API keys, audit verify."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.cli_helpers import custody, make_admins, policy_file, signer


@pytest.fixture
def installation(tmp_path, db_url, monkeypatch):
    monkeypatch.setenv("CUSTODY_DATABASE_URL", db_url)
    pw, keystores, cards = make_admins(tmp_path)
    data = tmp_path / "data"
    args = ["init", "--data-dir", data, "--quorum", 2, "--activation-delay", "0s", "--passphrase-file", pw]
    for card in cards:
        args += ["--admin-card", card]
    out = custody(*args).output
    assert "genesis" in out
    return {
        "tmp": tmp_path,
        "data": data,
        "config": data / "custody.toml",
        "pw": pw,
        "keystores": keystores,
        "cards": cards,
        "db_url": db_url,
    }


def test_init_writes_sealed_keys_and_refuses_to_overwrite(installation):
    data = installation["data"]
    names = {p.name for p in data.iterdir()}
    assert {"custody.toml", "identity.sealed", "identity.pub", "hot-seed.sealed", "genesis.json"} <= names
    assert (data / "identity.sealed").stat().st_mode & 0o077 == 0
    sealed = (data / "hot-seed.sealed").read_text()
    assert '"kdf"' in sealed and "scrypt" in sealed and "chacha20-poly1305" in sealed
    again = custody("init", "--data-dir", data, "--quorum", 1, "--admin", "x:" + "00" * 32, ok=False)
    assert again.exit_code == 1 and "data_dir_exists" in again.output


def test_policy_needs_a_quorum_of_admins_and_the_signers_refuse_rollback(installation):
    tmp, cfg, pw = installation["tmp"], installation["config"], installation["pw"]
    ks = installation["keystores"]
    toml = policy_file(tmp, installation["cards"], int(time.time()) + 3600)
    bundle, sigs = tmp / "bundle-1.json", [tmp / f"sig{i}.json" for i in range(3)]
    assert "version 1" in custody("policy", "propose", toml, "--out", bundle, "--config", cfg).output
    for i in range(3):
        state = tmp / f"state{i}"
        signer("policy", "pin", installation["data"] / "genesis.json", "--yes", "--state", state)
        review = signer("policy", "review", bundle, "--state", state).output
        assert "Whitelist: 2 added" in review and "+ whitelist.0x6e340b9cFFb37A989ca544e6BB780A2C78901d3f." in review
        signer(
            "policy",
            "sign",
            bundle,
            "--keystore",
            ks[i],
            "--out",
            sigs[i],
            "--yes",
            "--passphrase-file",
            pw,
            "--state",
            state,
        )
    refused = custody("policy", "apply", bundle, sigs[0], sigs[0], "--config", cfg, ok=False)
    assert refused.exit_code == 1 and "quorum_not_met" in refused.output
    assert "no policy applied yet" in custody("policy", "show", "--config", cfg).output
    assert "applied policy version 1" in custody("policy", "apply", bundle, sigs[0], sigs[2], "--config", cfg).output
    shown = custody("policy", "show", "--config", cfg).output
    assert "Policy bundle version 1" in shown and "omnibus" in shown
    again = custody("policy", "apply", bundle, sigs[0], sigs[2], "--config", cfg, ok=False)
    assert "bundle_out_of_sequence" in again.output
    # an admin's signer accepts version 1, then refuses to review an older bundle or another version 1
    state = tmp / "state0"
    signer("policy", "accept", bundle, sigs[0], sigs[1], "--state", state)
    assert "bundle_rollback" in signer("policy", "review", bundle, "--state", state, ok=False).output
    bundle2 = tmp / "bundle-2.json"
    custody("policy", "propose", toml, "--out", bundle2, "--config", cfg)
    assert "Whitelist: 0 added, 0 removed, 0 changed" in signer("policy", "review", bundle2, "--state", state).output


def test_a_typed_confirmation_guards_signing(installation):
    tmp, cfg = installation["tmp"], installation["config"]
    toml = policy_file(tmp, installation["cards"], int(time.time()) + 3600)
    bundle = tmp / "b.json"
    custody("policy", "propose", toml, "--out", bundle, "--config", cfg)
    state = tmp / "st"
    signer("policy", "pin", installation["data"] / "genesis.json", "--yes", "--state", state)
    declined = signer(
        "policy",
        "sign",
        bundle,
        "--keystore",
        installation["keystores"][0],
        "--out",
        tmp / "s.json",
        "--passphrase-file",
        installation["pw"],
        "--state",
        state,
        ok=False,
        stdin="nope\n",
    )
    assert declined.exit_code == 1 and not (tmp / "s.json").exists()
    assert '"decision": "declined"' in (state / "transcript.log").read_text()


def test_apikeys_and_audit_verify(installation):
    cfg = installation["config"]
    keyfile = installation["tmp"] / "client.key"
    public = custody("apikey", "keygen", "--out", keyfile).output.strip()
    assert len(public) == 64 and public not in keyfile.read_text() and keyfile.stat().st_mode & 0o077 == 0
    custody("apikey", "add", "backend", "--public-key", public, "--scopes", "withdraw,read", "--config", cfg)
    assert "already" in custody("apikey", "add", "backend", "--public-key", public, "--config", cfg, ok=False).output
    assert "bad scope" not in custody("apikey", "list", "--config", cfg).output
    assert (
        "invalid_scopes"
        in custody("apikey", "add", "x", "--public-key", public, "--scopes", "admin", "--config", cfg, ok=False).output
    )
    custody("apikey", "revoke", "backend", "--config", cfg)
    assert "revoked" in custody("apikey", "list", "--config", cfg).output
    assert "audit log intact: 3 entries" in custody("audit", "verify", "--config", cfg).output
    export = custody("audit", "export", "--config", cfg).output.splitlines()
    assert [line.count('"kind"') for line in export] == [1, 1, 1]
    if installation["db_url"].startswith("sqlite"):
        with sqlite3.connect(installation["db_url"].removeprefix("sqlite:///")) as conn:
            conn.execute("UPDATE audit_log SET subject = 'mallory' WHERE seq = 2")
        broken = custody("audit", "verify", "--config", cfg, ok=False)
        assert broken.exit_code == 1 and "first broken entry: 2" in broken.output
