"""The ``[bitcoin]`` section of custody.toml: the node's login, from the file or the node's cookie, never shown."""

from __future__ import annotations

import pytest

from custody.config import BitcoinSettings, load_settings, render_config
from custody.errors import ConfigError

SECRET = "s3cret-rpc-password"


def test_written_and_read_back(tmp_path):
    path = tmp_path / "custody.toml"
    btc = BitcoinSettings("http://127.0.0.1:18443", "custody", SECRET, confirmations=6)
    path.write_text(render_config(tmp_path, "sqlite:///x.db", bitcoin=btc))
    settings = load_settings(path)
    assert settings.bitcoin == btc
    assert settings.bitcoin.login() == ("custody", SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings.bitcoin)


def test_default_is_no_bitcoin(tmp_path):
    path = tmp_path / "custody.toml"
    path.write_text(render_config(tmp_path, "sqlite:///x.db"))
    assert load_settings(path).bitcoin == BitcoinSettings()
    path.write_text(render_config(tmp_path, "sqlite:///x.db").split("[bitcoin]")[0])  # an older file: no section
    assert load_settings(path).bitcoin.rpc_url == ""


def test_cookie_file(tmp_path):
    cookie = tmp_path / ".cookie"
    cookie.write_text(f"__cookie__:{SECRET}")
    assert BitcoinSettings("http://127.0.0.1:1", rpc_cookie_file=str(cookie)).login() == ("__cookie__", SECRET)
    cookie.write_text("garbage")
    with pytest.raises(ConfigError, match="not a bitcoind cookie file") as info:
        BitcoinSettings("http://127.0.0.1:1", rpc_cookie_file=str(cookie)).login()
    assert SECRET not in info.value.message
    with pytest.raises(ConfigError, match="rpc_cookie_file"):
        BitcoinSettings("http://127.0.0.1:1", rpc_cookie_file=str(tmp_path / "none")).login()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("confirmations = 0", "confirmations must be an integer"),
        ('confirmations = "3"', "confirmations must be an integer"),
        ("fallback_fee_rate = true", "fallback_fee_rate must be an integer"),
        ("rpc_password = 5", "are strings"),
        ('wallet = "x"', "unknown key 'wallet'"),
    ],
)
def test_refused(tmp_path, line, why):
    path = tmp_path / "custody.toml"
    before, section = render_config(tmp_path, "sqlite:///x.db").split("[bitcoin]\n")
    section, after = section.split("[webhooks]")
    key = line.split(" =")[0]
    kept = "\n".join(x for x in section.splitlines() if not x.startswith(f"{key} ="))
    path.write_text(f"{before}[bitcoin]\n{line}\n{kept}\n[webhooks]{after}")
    with pytest.raises(ConfigError, match=why):
        load_settings(path)
