"""The signer's messages say exactly what is wrong and what to do (issue 17): SLIP-39 share sets, restoring
a mnemonic typed as `key new` prints it, retrying a mistyped check word, an empty passphrase, and which hash
`por sign` asks for."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from signer.cli import main
from signer.keystore import load_keystore
from signer.porstatement import Statement
from tests.redteam.conftest import Ceremony, ceremony, template  # noqa: F401 (fixtures)
from tests.redteam.test_por_attacks import honest

PASS = "keystore pass phrase"
VECTORS = json.loads((Path(__file__).parent / "vectors" / "bip39-trezor.json").read_text())
WORDS24 = VECTORS["vectors"][-1][1]  # a published 24-word mnemonic


def run(*args: object, stdin: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin, env=env, catch_exceptions=False)


def failed(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "error [" in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    return result.output


@pytest.fixture
def _passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNER_PASSPHRASE", PASS)


# -- 1. `key recover` says too many, the same share twice, or not enough, with the numbers ---------------------
@pytest.fixture
def shares(tmp_path: Path, _passphrase: None) -> list[str]:
    assert run("key", "restore", "--name", "a", "--out", tmp_path / "k", stdin=WORDS24 + "\n").exit_code == 0
    out = run("key", "backup", tmp_path / "k", "--shares", 5, "--threshold", 3).output
    found = [line.strip() for line in out.splitlines() if len(line.split()) >= 20]
    assert len(found) == 5
    return found


@pytest.mark.parametrize(
    ("picked", "fragments"),
    [
        ([0, 1, 2, 3, 4], ("too many shares: 5 were given", "exactly 3", "any 3 of them")),
        ([0, 1, 2, 3], ("too many shares: 4 were given", "exactly 3")),
        ([0, 1], ("not enough shares: 2 were given", "needs 3")),
        ([3], ("not enough shares: 1 was given", "needs 3")),
        ([0, 2, 0], ("share 3 and share 1", "the same share", "give each share once")),
    ],
)
def test_recover_says_what_is_wrong_with_the_set_of_shares(tmp_path, shares, picked, fragments):
    r = run("key", "recover", "--name", "a", "--out", tmp_path / "r", stdin="".join(shares[i] + "\n" for i in picked))
    output = failed(r, "[mnemonic_invalid]", *fragments)
    assert not (tmp_path / "r").exists()
    assert not any(word in output.split() for word in shares[0].split()[4:])  # no share word is repeated


def test_recover_with_exactly_the_threshold_still_works_and_no_shares_is_named(tmp_path, shares):
    original = load_keystore((tmp_path / "k").read_bytes()).card
    r = run(
        "key", "recover", "--name", "a", "--out", tmp_path / "r", stdin=f"{shares[4]}\n\n{shares[1]}\n{shares[2]}\n"
    )
    assert r.exit_code == 0, r.output
    assert load_keystore((tmp_path / "r").read_bytes()).card == original
    failed(run("key", "recover", "--name", "a", "--out", tmp_path / "none", stdin="\n"), "no SLIP-39 shares")


# -- 2. `key restore` reads words on one line or many, numbered as `key new` prints them or not ----------------
def test_restore_reads_the_words_exactly_as_key_new_prints_them(tmp_path, _passphrase):
    made = run("key", "new", "--name", "n", "--out", tmp_path / "new", "--no-confirm")
    assert made.exit_code == 0, made.output
    printed = [line for line in made.output.splitlines() if line.strip()[:3].strip().rstrip(".").isdigit()]
    assert len(printed) == 24 and printed[6].startswith("   7. ")  # "  {i:2d}. {word}"
    r = run("key", "restore", "--name", "n", "--out", tmp_path / "back", stdin="\n".join(printed) + "\n")
    assert r.exit_code == 0, r.output
    assert load_keystore((tmp_path / "back").read_bytes()).card == load_keystore((tmp_path / "new").read_bytes()).card


@pytest.mark.parametrize(
    "layout",
    [
        lambda w: " ".join(w) + "\n",  # all on one line, as before
        lambda w: "\n".join(w) + "\n",  # one per line
        lambda w: "\n".join(f"{i}) {x}" for i, x in enumerate(w, 1)),  # "1) word", no final newline
        lambda w: " ".join(w[:12]) + "\n" + " ".join(w[12:]) + "\n",  # two lines of 12 (--words 24 given)
        lambda w: "\n".join(" ".join(f"{i}. {x}" for i, x in enumerate(w, 1) if (i - 1) // 4 == r) for r in range(6)),
    ],
    ids=["one-line", "one-per-line", "numbered-paren", "two-lines", "four-numbered-per-line"],
)
def test_restore_accepts_words_on_one_line_or_many(tmp_path, _passphrase, layout):
    r = run("key", "restore", "--name", "v", "--out", tmp_path / "k", "--words", 24, stdin=layout(WORDS24.split()))
    assert r.exit_code == 0, r.output
    expected = run("key", "restore", "--name", "v", "--out", tmp_path / "one", stdin=WORDS24 + "\n")
    assert load_keystore((tmp_path / "k").read_bytes()).card == load_keystore((tmp_path / "one").read_bytes()).card
    assert expected.exit_code == 0


def test_restore_of_a_12_word_mnemonic_one_per_line_then_its_bip39_passphrase(tmp_path, _passphrase):
    words = VECTORS["vectors"][0][1].split()
    assert len(words) == 12
    stdin = "\n".join(words) + f"\n{VECTORS['passphrase']}\n"
    r = run("key", "restore", "--name", "v", "--out", tmp_path / "k", "--words", 12, "--bip39-passphrase", stdin=stdin)
    assert r.exit_code == 0, r.output
    single = f"{' '.join(words)}\n{VECTORS['passphrase']}\n"
    assert (
        run("key", "restore", "--name", "v", "--out", tmp_path / "one", "--bip39-passphrase", stdin=single).exit_code
        == 0
    )
    assert load_keystore((tmp_path / "k").read_bytes()).card == load_keystore((tmp_path / "one").read_bytes()).card


@pytest.mark.parametrize(
    ("stdin", "fragments"),
    [
        ("\n".join(WORDS24.split()[:10]) + "\n", ("wrong number of words: 10 read, 24 expected", "--words")),
        (
            "\n".join(f"{i}. {w}" for i, w in enumerate(WORDS24.split(), 1) if i != 5) + "\n",
            ("the number 6 is where word 5 belongs", "missing or repeated"),
        ),
        (" ".join([*WORDS24.split(), "abandon"]) + "\n", ("wrong number of words: 25 read, 24 expected",)),
    ],
    ids=["short", "skipped-line", "too-many"],
)
def test_restore_names_a_short_skipped_or_long_mnemonic(tmp_path, _passphrase, stdin, fragments):
    output = failed(run("key", "restore", "--name", "v", "--out", tmp_path / "k", stdin=stdin), *fragments)
    assert WORDS24.split()[1] not in output and not (tmp_path / "k").exists()


def test_restore_on_a_terminal_prompts_for_each_line_and_does_not_echo(tmp_path):
    """Run as an operator would, on a terminal (a pseudo-terminal with no controlling tty, so the hidden
    prompt turns echo off on standard input itself)."""
    controller, terminal = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "signer.cli", "key", "restore", "--name", "t", "--out", str(tmp_path / "k")],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        env={**os.environ, "SIGNER_PASSPHRASE": PASS},
    )
    os.close(terminal)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 60
        while marker not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([controller], [], [], 1)[0]:
                try:
                    seen += os.read(controller, 4096)
                except OSError:  # the child closed the terminal
                    break
        assert marker in seen, seen

    try:
        words = WORDS24.split()
        for i in range(0, 24, 6):  # six words a line, numbered as `key new` prints them
            read_until(f"word {i + 1} of 24".encode())
            os.write(controller, (" ".join(f"{j}. {w}" for j, w in enumerate(words[i : i + 6], i + 1)) + "\n").encode())
        read_until(b"owner address")
        assert proc.wait(timeout=60) == 0, seen
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    text = seen.decode()
    assert "nothing is shown as you type" in text
    assert not any(w in text.split() for w in words), text  # no word was echoed
    assert load_keystore((tmp_path / "k").read_bytes()).card.name == "t"


# -- 3. a mistyped check word in `key new` may be typed again ----------------------------------------------------
def _key_new(out: Path, answer) -> tuple[int, str]:
    """`key new` through pipes, as test_keystore does: read the words off the screen, then answer each
    "word N: " prompt with ``answer(position, right_word, attempt)``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "signer.cli", "key", "new", "--name", "n", "--out", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env={**os.environ, "SIGNER_PASSPHRASE": PASS},
    )
    assert proc.stdin is not None and proc.stdout is not None
    words: list[str] = []
    transcript = ""
    for line in proc.stdout:
        transcript += line
        parts = line.split()
        if len(parts) == 2 and parts[0].rstrip(".").isdigit():
            words.append(parts[1])
        if line.startswith("To check your paper"):
            break
    attempts: dict[int, int] = {}
    while True:
        prompt = ""
        while not prompt.endswith(": "):
            char = proc.stdout.read(1)
            if not char:
                break
            prompt += char
        transcript += prompt
        tail = prompt.rsplit("\n", 1)[-1].split()
        if len(tail) != 2 or tail[0] != "word":
            break
        pos = int(tail[1].rstrip(":"))
        attempts[pos] = attempts.get(pos, 0) + 1
        proc.stdin.write(answer(pos, words[pos - 1], attempts[pos]) + "\n")
        proc.stdin.flush()
    proc.stdin.close()
    rest = proc.stdout.read()  # not communicate(): it would skip what the text buffer already holds
    proc.stdout.close()
    return proc.wait(timeout=60), transcript + rest


def test_key_new_lets_a_mistyped_check_word_be_typed_again_and_shows_the_words_once(tmp_path):
    def answer(pos: int, word: str, attempt: int) -> str:
        return {1: "zoé", 2: word[::-1] + "x"}.get(attempt, word)  # two typos (one not ASCII), then right

    code, output = _key_new(tmp_path / "k", answer)
    assert code == 0, output
    assert "Traceback" not in output
    assert "does not match; check the paper and type it again (2 tries left)" in output
    assert "(1 try left)" in output
    assert output.count("Write these 24 words") == 1 and load_keystore((tmp_path / "k").read_bytes()).card.name == "n"


def test_key_new_gives_up_after_three_wrong_tries_and_writes_nothing(tmp_path):
    code, output = _key_new(tmp_path / "k", lambda pos, word, attempt: "zoo" if word != "zoo" else "abandon")
    assert code == 1 and "Traceback" not in output, output
    assert "does not match after 3 tries; nothing was written" in output and "[mnemonic_invalid]" in output
    assert output.count("Write these 24 words") == 1 and not (tmp_path / "k").exists()


# -- 4. an empty passphrase is refused with the reason ----------------------------------------------------------
def test_an_empty_passphrase_is_refused_with_the_reason_before_asking_again(tmp_path):
    stdin = f"{WORDS24}\n\n\nsecret one\nsecret two\nsecret one\nsecret one\n"
    r = run("key", "restore", "--name", "p", "--out", tmp_path / "k", stdin=stdin, env={"SIGNER_PASSPHRASE": None})
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert r.output.count("The passphrase may not be empty; type it again.") == 2
    assert "The two passphrases do not match; type it again." in r.output
    assert "secret" not in r.output
    r = run(
        "key",
        "backup",
        tmp_path / "k",
        "--shares",
        3,
        "--threshold",
        2,
        stdin="\nsecret one\n",
        env={"SIGNER_PASSPHRASE": None},
    )
    assert r.exit_code == 0 and "may not be empty" in r.output, r.output


# -- 5. `por sign` names the hash it asks for, as it is printed ------------------------------------------------
def test_por_sign_asks_for_the_statement_hash_by_the_name_it_is_printed_under(ceremony: Ceremony):  # noqa: F811
    statement = Statement(honest(ceremony))
    path = ceremony.file(statement.to_bytes(), "statement.json")
    op = ceremony.operators[0]
    args = ["por", "sign", path, "--keystore", op.keystore, "--passphrase-file", ceremony.passfile]
    digest = statement.hash.hex()
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    r = ceremony.run(*args, "--out", ceremony.tmp / "no.sig", stdin=wrong + "\n")
    failed(r, 'Type the first 8 hex digits of the "statement hash" shown above', "nothing was signed")
    assert f"statement hash {digest}" in r.output and not (ceremony.tmp / "no.sig").exists()
    r = ceremony.run(*args, "--out", ceremony.tmp / "yes.sig", stdin=digest[:8] + "\n")
    assert r.exit_code == 0 and (ceremony.tmp / "yes.sig").exists(), r.output
