"""custody.toml: settings outside the chain sections (the [bitcoin] section has its own tests)."""

from __future__ import annotations

import pytest

from custody.config import load_settings, render_config
from custody.errors import ConfigError


def test_webhook_lease_is_read_and_defaults_to_30_seconds(tmp_path):
    path = tmp_path / "custody.toml"
    text = render_config(tmp_path, "sqlite:///x.db")
    path.write_text(text)
    assert load_settings(path).webhook_lease_seconds == 30
    path.write_text(text.replace("lease_seconds = 30", "lease_seconds = 2.5"))
    assert load_settings(path).webhook_lease_seconds == 2.5


@pytest.mark.parametrize("value", ["0", "3601", '"30"', "true"])
def test_webhook_lease_out_of_range_is_refused(tmp_path, value):
    path = tmp_path / "custody.toml"
    path.write_text(render_config(tmp_path, "sqlite:///x.db").replace("lease_seconds = 30", f"lease_seconds = {value}"))
    with pytest.raises(ConfigError, match="lease_seconds must be a number of seconds from 1 to 3600"):
        load_settings(path)
