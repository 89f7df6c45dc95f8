"""The operators' web console (`custody console`): a separate, server-rendered, read-only web app on its own port.

``app`` wires it (``create_console_app``); ``auth`` signs operators in with one-time tokens, keeps sessions
and CSRF tokens (its two tables are in ``custody.store.models``, migration 0013); one module per page group
(``overview``, ``withdrawals``, ``cold``, ``policy``, ``auditlog``, ``reserves``, ``signin``) reads what its
pages show; ``render`` is the Jinja2 environment (autoescape on) and the formatting the templates share. The
only write is a freeze. See docs/console.md.
"""
