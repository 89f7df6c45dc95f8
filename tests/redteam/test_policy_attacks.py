"""The compromised host against policy bundles: it writes any bundle it likes (with the project's own writer)
and hands it to the admins' real `signer` CLI, which must refuse it with one exact code or show exactly what it
changes. Each test names the rule of the hardening issue it attacks."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from custody.ledger import policy as policy_service
from custody.store.db import Store
from policies.bundle import Bundle, Head, make_bundle, parse_genesis, sign_bundle, verify_successor
from policies.errors import BundleTimeError, PolicyFileError
from policies.loader import load_policy_toml
from policies.model import Admin, DenyEntry, Governance, Policy
from tests.conftest import ADMINS, DENIED, OMNIBUS, governance_for_tests, policy_toml
from tests.redteam.conftest import DAY, STRANGER, Ceremony, policy_text, refused, stamp


def admins(ceremony: Ceremony) -> list[tuple[str, str]]:
    return [(op.name, op.card["approval_key"]) for op in ceremony.operators]


def text(ceremony: Ceremony, extra: str = "", active_from: int | None = None) -> str:
    """The ceremony's policy (entries as active as in bundle 1, so unchanged), plus ``extra``."""
    return policy_text(admins(ceremony), active_from or ceremony.bundle.created_at, extra)


def bundle_file(ceremony: Ceremony, bundle: Bundle) -> Path:
    return ceremony.file(bundle.raw, f"bundle-{bundle.version}-{bundle.hash[:8]}.json")


def quorum(ceremony: Ceremony, bundle: Bundle, who: tuple[int, ...] = (0, 1)) -> list[Path]:
    """Signature files by these operators' approval keys, as if they had signed in a ceremony."""
    return [
        ceremony.file(sign_bundle(bundle.hash, ceremony.operators[i].approval).to_bytes(), f"{bundle.hash[:8]}.{i}.sig")
        for i in who
    ]


def sign(ceremony: Ceremony, bundle: Bundle, who: int = 0, key: int | None = None):
    """`signer policy sign` on state ``who`` with operator ``key``'s keystore (by default the same index)."""
    out = ceremony.tmp / f"{bundle.hash[:8]}.signed-by-{who}.sig"
    result = ceremony.signing(("policy", "sign"), bundle_file(ceremony, bundle), out, who, key=key)
    return result, out


def review(ceremony: Ceremony, bundle: Bundle, who: int = 0):
    return ceremony.run("policy", "review", bundle_file(ceremony, bundle), who=who)


def genesis_only(ceremony: Ceremony) -> int:
    """A new signer state holding only the pinned genesis; returns its operator index for ``ceremony.run``."""
    ceremony.states.append(ceremony.tmp / f"state-genesis-{len(ceremony.states)}")
    who = len(ceremony.states) - 1
    ceremony.run("policy", "pin", ceremony.file(ceremony.genesis, "genesis.json"), "--yes", who=who, ok=True)
    return who


# -- 5. time binds bundles ------------------------------------------------------------------------------------
def test_a_bundle_dated_like_the_previous_one_is_not_signed(ceremony):
    """The host copies created_at from the previous bundle (days old) and whitelists its own address with an
    active_from that satisfies the 24 h delay from that date, and so has already passed. The chain rules alone
    accept it; the admin's signer refuses to sign a bundle that its own clock says is stale."""
    genesis = parse_genesis(ceremony.genesis)
    first_at = genesis.created_at + 3600
    delayed = text(ceremony, active_from=first_at + DAY).replace('activation_delay = "0s"', 'activation_delay = "24h"')
    first = make_bundle(load_policy_toml(delayed), genesis, first_at)
    who = genesis_only(ceremony)
    ceremony.run("policy", "accept", bundle_file(ceremony, first), *quorum(ceremony, first), who=who, ok=True)

    attacker = delayed + f'[[whitelist]]\naddress = "{STRANGER}"\nassets = ["ETH"]\nlabel = "treasury reserve"\n'
    attacker += f"active_from = {stamp(first_at + DAY)}\n"
    stale = make_bundle(load_policy_toml(attacker), first.head(), first.created_at)
    assert stale.policy.whitelist[STRANGER].active_from < time.time()  # usable at once, if applied
    verify_successor(first.head(), stale, [sign_bundle(stale.hash, op.approval) for op in ceremony.operators[:2]])

    shown = review(ceremony, stale, who=who)
    assert shown.exit_code == 0, shown.output
    assert "SIGNING WILL BE REFUSED [bundle_time_invalid]" in shown.output
    assert f'+ whitelist.{STRANGER}.label: "treasury reserve"' in shown.output
    result, out = sign(ceremony, stale, who=who, key=0)
    assert "before this computer's clock" in refused(result, "bundle_time_invalid")
    assert not out.exists()
    assert '"decision": "refused: bundle_time_invalid"' in (ceremony.states[who] / "transcript.log").read_text()


def test_a_bundle_dated_ten_minutes_ahead_is_not_signed(ceremony):
    ahead = make_bundle(load_policy_toml(text(ceremony)), ceremony.bundle.head(), int(time.time()) + 600)
    result, out = sign(ceremony, ahead)
    assert "after this computer's clock" in refused(result, "bundle_time_invalid")
    assert not out.exists()
    fresh = make_bundle(load_policy_toml(text(ceremony)), ceremony.bundle.head(), int(time.time()))
    result, out = sign(ceremony, fresh)
    assert result.exit_code == 0 and out.exists(), result.output


def test_the_daemon_does_not_apply_a_bundle_dated_ahead_of_its_clock(tmp_path):
    """Dated ahead, a quorum-signed bundle would block every later bundle (dates may not go back)."""
    store = Store(f"sqlite:///{tmp_path / 'custody.db'}")
    store.migrate()
    try:
        now = int(time.time())
        with store.transaction() as s:
            genesis = parse_genesis(policy_service.install_genesis(s, governance_for_tests(), now - 4 * DAY))
        for ahead, ok in ((600, False), (300, True)):
            policy = load_policy_toml(policy_toml(now, activation=now + ahead + DAY))
            bundle = make_bundle(policy, genesis, now + ahead)
            sigs = [sign_bundle(bundle.hash, k).to_bytes() for k in ADMINS[:2]]
            if ok:
                assert policy_service.apply(store, bundle.raw, sigs, now).version == 1
                continue
            try:
                policy_service.apply(store, bundle.raw, sigs, now)
            except BundleTimeError as exc:
                assert exc.code == "bundle_time_invalid" and "after this computer's clock" in exc.message
            else:
                raise AssertionError("a bundle dated 10 minutes ahead was applied")
            with store.read() as s:
                assert policy_service.head(s)[0].version == 0
    finally:
        store.dispose()


# -- 6. a field-by-field diff, and decimals that never change ----------------------------------------------
def test_changed_decimals_are_shown_and_refused(ceremony):
    twelve = make_bundle(
        load_policy_toml(text(ceremony).replace("decimals = 6", "decimals = 12")),
        ceremony.bundle.head(),
        int(time.time()),
    )
    shown = review(ceremony, twelve)
    assert shown.exit_code == 0, shown.output
    assert "~ assets.USDC.decimals: 6 -> 12" in shown.output
    assert "SIGNING WILL BE REFUSED [asset_decimals_changed]" in shown.output
    refused(sign(ceremony, twelve)[0], "asset_decimals_changed")
    accepted = ceremony.run("policy", "accept", bundle_file(ceremony, twelve), *quorum(ceremony, twelve))
    assert "USDC's decimals change from 6 to 12" in refused(accepted, "asset_decimals_changed")


def test_a_second_asset_on_the_same_contract_is_refused_at_parse(ceremony):
    v1 = ceremony.bundle.policy
    usdx = replace(v1.assets["USDC"], symbol="USDX", decimals=18)
    bundle = make_bundle(replace(v1, assets={**v1.assets, "USDX": usdx}), ceremony.bundle.head(), int(time.time()))
    message = refused(review(ceremony, bundle), "policy_invalid")
    assert message.startswith("assets.USDX.contract: ") and "already the contract of USDC" in message
    refused(
        ceremony.run("policy", "accept", bundle_file(ceremony, bundle), *quorum(ceremony, bundle)), "policy_invalid"
    )


def accepted_next(ceremony: Ceremony, policy: Policy) -> Bundle:
    """A bundle the operators really approved (a quorum of approval keys), accepted by operator 0's signer."""
    bundle = make_bundle(policy, ceremony.bundle.head(), int(time.time()) - 10)
    ceremony.run("policy", "accept", bundle_file(ceremony, bundle), *quorum(ceremony, bundle), ok=True)
    return bundle


def test_dropping_every_api_key_limit_shows_each_removal(ceremony):
    keys = (
        "[api_keys.backend]\n"
        'windows = [{ asset = "ETH", period = "1h", limit = "100" },'
        ' { asset = "USDC", period = "24h", limit = "50000" }]\n'
        "[api_keys.ops]\n"
        'windows = [{ asset = "ETH", period = "1m", limit = "1.5" }]\n'
    )
    limited = accepted_next(ceremony, load_policy_toml(text(ceremony, keys)))
    dropped = make_bundle(load_policy_toml(text(ceremony)), limited.head(), int(time.time()))
    shown = review(ceremony, dropped)
    assert shown.exit_code == 0, shown.output
    for line in (
        "- api_keys.backend.windows.ETH.1h: 100 ETH",
        "- api_keys.backend.windows.USDC.1d: 50000 USDC",
        "- api_keys.ops.windows.ETH.1m: 1.5 ETH",
        "API keys: 0 added, 2 removed, 0 changed, 0 in all",
    ):
        assert line in shown.output, shown.output
    changes = [x.strip() for x in shown.output.splitlines() if x.startswith(("  + ", "  - ", "  ~ "))]
    assert len(changes) == 3, changes


def test_a_hot_band_in_shares_is_shown(ceremony):
    share = text(ceremony).replace('hot_limit = "5"', 'hot_limit = "5"\nhot_min_share = "99"\nhot_max_share = "100"')
    bundle = make_bundle(load_policy_toml(share), ceremony.bundle.head(), int(time.time()))
    shown = review(ceremony, bundle)
    assert shown.exit_code == 0, shown.output
    assert "+ assets.ETH.hot_min_share: 99% of the asset's total" in shown.output
    assert "+ assets.ETH.hot_max_share: 100% of the asset's total" in shown.output


# -- 7. text that would change what the screen shows -----------------------------------------------------
def test_a_label_with_a_bidi_override_is_refused_even_with_a_quorum(ceremony):
    v1 = ceremony.bundle.policy
    entry = replace(v1.whitelist[OMNIBUS], label="omnibus \u202e1x0 ot yap")
    bundle = make_bundle(
        replace(v1, whitelist={**v1.whitelist, OMNIBUS: entry}), ceremony.bundle.head(), int(time.time())
    )
    message = refused(review(ceremony, bundle), "policy_invalid")
    assert message.startswith("whitelist[") and "U+202E" in message and "\u202e" not in message
    accepted = ceremony.run("policy", "accept", bundle_file(ceremony, bundle), *quorum(ceremony, bundle))
    refused(accepted, "policy_invalid")


def test_a_deny_note_with_a_bidi_isolate_is_refused(ceremony):
    v1 = ceremony.bundle.policy
    bundle = make_bundle(
        replace(v1, deny={DENIED: DenyEntry(DENIED, "sanctioned \u2067ok")}), ceremony.bundle.head(), int(time.time())
    )
    message = refused(review(ceremony, bundle), "policy_invalid")
    assert message.startswith("deny[0].note: ") and "U+2067" in message and "\u2067" not in message


# -- 9. the admin set ----------------------------------------------------------------------------------------
def test_a_first_bundle_that_replaces_the_admins_shows_it_and_needs_the_genesis_quorum(ceremony):
    who = genesis_only(ceremony)
    mallory = [SigningKey.generate() for _ in range(2)]
    keys = [k.verify_key.encode().hex() for k in mallory]
    governance = Governance(
        tuple(sorted((Admin(f"mallory{i}", key) for i, key in enumerate(keys)), key=lambda a: a.key)), 1, 0
    )
    genesis: Head = parse_genesis(ceremony.genesis)
    bundle = make_bundle(replace(ceremony.bundle.policy, governance=governance), genesis, int(time.time()))
    shown = review(ceremony, bundle, who=who)
    assert shown.exit_code == 0, shown.output
    assert "Governance (CHANGED): quorum 1 of 2, activation delay 0s" in shown.output
    assert "~ governance.quorum: 2 -> 1" in shown.output
    for op in ceremony.operators:
        assert f'- governance.admins.{op.card["approval_key"]}: "{op.name}"' in shown.output
    for i, key in enumerate(keys):
        assert f'+ governance.admins.{key}: "mallory{i}"' in shown.output
    forged = [ceremony.file(sign_bundle(bundle.hash, k).to_bytes(), f"mallory{i}.sig") for i, k in enumerate(mallory)]
    accepted = ceremony.run("policy", "accept", bundle_file(ceremony, bundle), *forged, who=who)
    assert "not in the current admin set" in refused(accepted, "quorum_not_met")


def test_decimals_cannot_be_laundered_through_a_bundle_without_the_asset(ceremony):
    """v2 drops USDC so that v3 could bring its contract back with 18 decimals: dropping is refused."""
    created = int(time.time()) - 10
    v1_text = text(ceremony, active_from=created)  # entries re-dated: the activation rule is not what refuses
    usdc = v1_text[v1_text.index("[assets.USDC]") : v1_text.index("[[whitelist]]")]
    dropped = v1_text.replace(usdc, "").replace('assets = ["ETH", "USDC"]', 'assets = ["ETH"]')
    v2 = make_bundle(load_policy_toml(dropped), ceremony.bundle.head(), created)
    shown = review(ceremony, v2)
    assert "SIGNING WILL BE REFUSED [asset_removed]" in shown.output
    refused(sign(ceremony, v2)[0], "asset_removed")
    refused(ceremony.run("policy", "accept", bundle_file(ceremony, v2), *quorum(ceremony, v2)), "asset_removed")
    disabled = v1_text.replace(usdc, usdc + "enabled = false\n")
    v2 = make_bundle(load_policy_toml(disabled), ceremony.bundle.head(), created)
    ceremony.run("policy", "accept", bundle_file(ceremony, v2), *quorum(ceremony, v2), ok=True)


def test_labels_that_draw_nothing_are_refused():
    """A Hangul filler after "omnibus" looks exactly like "omnibus" on a review screen."""
    for blank in ("\u3164", "\u115f", "\u1160", "\uffa0", "\u2800"):
        toml = policy_toml(int(time.time())).replace('label = "omnibus"', f'label = "omnibus{blank}"')
        with pytest.raises(PolicyFileError, match="not allowed"):
            load_policy_toml(toml)


def test_a_bundle_built_on_one_the_signer_never_saw_is_not_signed(ceremony):
    """The host hides bundle 2 (which whitelists its own address) and asks for signatures on bundle 3, built
    on top of it and identical to it: shown against the signer's head (bundle 1), 3 would look like the change
    it carries, not like the whole of 2 and 3 together. The signer refuses any bundle that is not the next one
    after the newest it verified, with the daemon's code for that rule."""
    hidden_text = text(ceremony) + f'[[whitelist]]\naddress = "{STRANGER}"\nassets = ["ETH"]\nlabel = "hidden"\n'
    hidden_text += f"active_from = {stamp(ceremony.bundle.created_at)}\n"
    hidden = make_bundle(load_policy_toml(hidden_text), ceremony.bundle.head(), int(time.time()))
    shown_next = make_bundle(load_policy_toml(hidden_text), hidden.head(), int(time.time()))
    assert shown_next.version == ceremony.bundle.version + 2

    assert "the next must be" in refused(review(ceremony, shown_next), "bundle_out_of_sequence")
    result, out = sign(ceremony, shown_next)
    assert "skips a version" in refused(result, "bundle_out_of_sequence")
    assert not out.exists()
