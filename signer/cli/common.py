"""What the `signer` commands share, declared once: the --state, --passphrase-file and --yes options, the
options of every signing command, the keystore passphrase, and the typed confirmations of the ceremonies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from signer import coldwallet, policystate
from signer.cliutil import passphrase, read_file
from signer.errors import ConfirmationDeclined, SignerError
from signer.keystore import Keystore, load_keystore, unlock

F = TypeVar("F", bound=Callable[..., Any])
PASS_ENV = "SIGNER_PASSPHRASE"  # noqa: S105 (the name of a variable, not a secret)
state_option = click.option(
    "--state",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The signer's state directory (default $SIGNER_HOME or ~/.custody-signer).",
)
# Where the keystore's passphrase comes from (see ``keystore_passphrase``): this file, else $SIGNER_PASSPHRASE,
# else a prompt.
passphrase_option = click.option(
    "--passphrase-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None
)
yes_option = click.option("--yes", is_flag=True, help="Skip the typed confirmation (automation only).")


def signing_options(command: F) -> F:
    """What every signing command takes: the keystore, where the signature goes, --yes, the passphrase file
    and the state directory."""
    for option in reversed(
        (
            click.option("--keystore", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True)),
            click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False)),
            yes_option,
            passphrase_option,
            state_option,
        )
    ):
        command = option(command)
    return command


def state_dir(state: Path | None) -> Path:
    """The --state directory, else $SIGNER_HOME, else ~/.custody-signer."""
    return state or policystate.default_state_dir()


def keystore_passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> str:
    """The keystore's passphrase: the first line of ``passphrase_file``, else $SIGNER_PASSPHRASE, else a hidden
    prompt (typed twice with ``confirm``)."""
    return passphrase(passphrase_file, PASS_ENV, "Keystore passphrase", confirm=confirm)


def confirm_pin(st: Path, action: str, subject: str, digest: str, yes: bool) -> None:
    """A pin is a ceremony step: the operator compares the file's hash with the other operators' out of band
    and types its first 8 hex digits; declining is recorded like pinning."""
    if yes:
        return
    typed = click.prompt(
        "\nCompare this file hash with the other operators' now, then type its first 8 hex digits to pin it"
    )
    if str(typed).strip().lower() != digest[:8]:
        policystate.record(st, action, subject, digest, "declined")
        raise ConfirmationDeclined("confirmation did not match; nothing was pinned")


def owner_key(
    st: Path,
    keystore: Path,
    yes: bool,
    passphrase_file: Path | None,
    record: tuple[str, str, str],
    expected: str,
    label: str,
) -> tuple[Keystore, bytes]:
    """A Safe owner's signing key, after checking the key owns the pinned Safe and, unless ``yes``, that the
    operator typed ``expected`` (the start of the hash being signed). ``record`` is (action, subject, hash);
    ``label`` is the hash's name exactly as the lines shown above print it, since they show several hashes."""
    ks = load_keystore(read_file(keystore))
    if ks.card.owner_address not in coldwallet.pinned(st).owners:
        raise SignerError(f"this key's owner address {ks.card.owner_address} is not an owner of the pinned Safe")
    if not yes:
        typed = click.prompt(f'\nType the first {len(expected)} hex digits of the "{label}" shown above to sign it')
        if str(typed).strip().lower().removeprefix("0x") != expected:
            policystate.record(st, *record, "declined")
            raise SignerError("confirmation did not match; nothing was signed")
    return ks, unlock(ks, keystore_passphrase(passphrase_file)).owner_private_key()
