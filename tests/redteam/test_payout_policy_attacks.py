"""The compromised host against the customer-payout sections of a policy (issue 16). It writes a bundle that
loosens them quietly (opens unlisted payouts with a limit nobody would approve, adds an operator who could release
held withdrawals or a backend whose signature would pay customers, widens where an API key may call from,
shortens the address lock, turns the holds off) and hands it to the admins' real `signer policy review`: every
such change must be on the screen, one line per field, before anyone signs. What no quorum may sign at all is
refused with its code."""

from __future__ import annotations

import time
from dataclasses import replace

from nacl.signing import SigningKey

from policies.bundle import Bundle, make_bundle, sign_bundle
from policies.loader import load_policy_toml
from policies.model import Backend, HoldRules
from tests.redteam.conftest import Ceremony, policy_text, refused


def public(seed: int) -> str:
    return SigningKey(bytes([seed]) * 32).verify_key.encode().hex()


MALLORY = public(66)  # the attacker's own key
EVE = public(67)


def text(ceremony: Ceremony, extra: str = "", *, eth: str = "") -> str:
    """The ceremony's policy (unchanged entries), ``eth`` added to the ETH asset and ``extra`` at the end."""
    admins = [(op.name, op.card["approval_key"]) for op in ceremony.operators]
    body = policy_text(admins, ceremony.bundle.created_at, extra)
    return body.replace('hot_limit = "5"\n', f'hot_limit = "5"\n{eth}\n', 1) if eth else body


def bundle_on(ceremony: Ceremony, toml: str, previous: Bundle | None = None) -> Bundle:
    return make_bundle(load_policy_toml(toml), (previous or ceremony.bundle).head(), int(time.time()))


def review(ceremony: Ceremony, bundle: Bundle) -> str:
    path = ceremony.file(bundle.raw, f"bundle-{bundle.version}-{bundle.hash[:8]}.json")
    result = ceremony.run("policy", "review", path)
    assert result.exit_code == 0, result.output
    return result.output


def changes(output: str) -> list[str]:
    return [x.strip() for x in output.splitlines() if x.startswith(("  + ", "  - ", "  ~ "))]


def accepted(ceremony: Ceremony, toml: str) -> Bundle:
    """A bundle the admins really approved (a quorum of approval keys), accepted by operator 0's signer."""
    bundle = make_bundle(load_policy_toml(toml), ceremony.bundle.head(), int(time.time()) - 10)
    path = ceremony.file(bundle.raw, f"bundle-{bundle.version}-{bundle.hash[:8]}.json")
    sigs = [
        ceremony.file(sign_bundle(bundle.hash, op.approval).to_bytes(), f"{bundle.hash[:8]}.{i}.sig")
        for i, op in enumerate(ceremony.operators[:2])
    ]
    ceremony.run("policy", "accept", path, *sigs, ok=True)
    return bundle


OPERATORS = f'[[operators]]\nname = "olga"\nkey = "{EVE}"\n[[operators]]\nname = "peter"\nkey = "{MALLORY}"\n'


def test_unlisted_payouts_opened_with_a_huge_limit_are_shown(ceremony):
    huge = 'unlisted = { max_per_transfer = "100", windows = [{ period = "24h", limit = "1000000" }] }'
    shown = review(ceremony, bundle_on(ceremony, text(ceremony, eth=huge)))
    assert "Unlisted payouts: allowed for ETH" in shown
    assert changes(shown) == [
        "+ assets.ETH.unlisted: allowed (payouts to addresses neither whitelisted nor in an address book)",
        "+ assets.ETH.unlisted.max_per_transfer: 100 ETH",
        "+ assets.ETH.unlisted.windows.1d: 1000000 ETH",
    ]


def test_an_added_operator_is_shown(ceremony):
    v2 = accepted(ceremony, text(ceremony, OPERATORS))
    extra = OPERATORS + f'[[operators]]\nname = "olga2"\nkey = "{public(68)}"\n'
    shown = review(ceremony, bundle_on(ceremony, text(ceremony, extra), v2))
    assert "Operators: 1 added, 0 removed, 0 changed, 3 in all" in shown
    added = [line for line in changes(shown) if line.startswith("+ operators.")]
    assert added == [f'+ operators.{public(68)}: "olga2"']
    assert len(changes(shown)) == 1


def test_an_operator_key_swapped_under_the_same_name_is_shown(ceremony):
    v2 = accepted(ceremony, text(ceremony, OPERATORS))
    swapped = OPERATORS.replace(EVE, public(69))
    shown = review(ceremony, bundle_on(ceremony, text(ceremony, swapped), v2))
    assert f'- operators.{EVE}: "olga"' in changes(shown)
    assert "Operators: 1 added, 1 removed, 0 changed, 2 in all" in shown


def test_an_added_backend_is_shown(ceremony):
    shown = review(
        ceremony, bundle_on(ceremony, text(ceremony, f'[[backends]]\nname = "backend"\nkey = "{MALLORY}"\n'))
    )
    assert "Backends: 1 added, 0 removed, 0 changed, 1 in all" in shown
    assert changes(shown) == [f'+ backends.{MALLORY}: "backend"']


def test_widened_source_networks_are_shown(ceremony):
    v2 = accepted(ceremony, text(ceremony, '[api_keys.backend]\nsources = ["10.20.0.0/16"]\n'))
    wide = review(
        ceremony,
        bundle_on(ceremony, text(ceremony, '[api_keys.backend]\nsources = ["0.0.0.0/0", "10.20.0.0/16"]\n'), v2),
    )
    assert "~ api_keys.backend.sources: 10.20.0.0/16 -> 0.0.0.0/0, 10.20.0.0/16" in changes(wide)
    dropped = review(ceremony, bundle_on(ceremony, text(ceremony, "[api_keys.backend]\n"), v2))
    assert changes(dropped) == ["- api_keys.backend.sources: 10.20.0.0/16"]


def test_a_shorter_address_lock_and_holds_turned_off_are_shown(ceremony):
    rules = '[customers]\naddress_lock = "24h"\n[holds]\nfirst_payout = true\nsimilar_to_denied = true\n' + OPERATORS
    v2 = accepted(ceremony, text(ceremony, rules))
    loose = rules.replace('"24h"', '"1s"').replace("first_payout = true\nsimilar_to_denied = true\n", "")
    shown = review(ceremony, bundle_on(ceremony, text(ceremony, loose), v2))
    assert "Hold rules (CHANGED): none" in shown
    assert changes(shown) == [
        "~ customers.address_lock: 1d -> 1s",
        "- holds.first_payout: on (a customer's first payout to an address is held)",
        "- holds.similar_to_denied: on (held when first and last 4 hex digits match a denied address)",
    ]


def test_an_operator_holding_the_backend_key_is_refused_even_with_a_quorum(ceremony):
    """An operator with the backend's key could request a payout and approve its hold itself: four eyes gone.
    The host writes the bundle directly (the TOML loader would not), and the signer refuses to show it as valid."""
    policy = load_policy_toml(text(ceremony, OPERATORS))
    bundle = make_bundle(replace(policy, backends=(Backend("backend", EVE),)), ceremony.bundle.head(), int(time.time()))
    message = refused(ceremony.run("policy", "review", ceremony.file(bundle.raw, "same-key.json")), "policy_invalid")
    assert message.startswith("operators[0].key: is also the key of backend backend")


def test_holds_without_two_operators_are_refused(ceremony):
    """Nobody could ever release a held withdrawal: payouts would stop, so no quorum may sign such a bundle."""
    v1 = ceremony.bundle.policy
    bundle = make_bundle(replace(v1, holds=HoldRules(first_payout=True)), ceremony.bundle.head(), int(time.time()))
    message = refused(ceremony.run("policy", "review", ceremony.file(bundle.raw, "holds.json")), "policy_invalid")
    assert message.startswith("holds: needs at least two [[operators]]")
