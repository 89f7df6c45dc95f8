"""Errors of the console, each with a stable ``code`` (the daemon's hierarchy, ``custody.errors``, extended):

Unauthorized (custody.errors)
├── NotSignedIn            not_signed_in: no session, an unknown or expired one (the page redirects to sign-in)
├── LoginTokenInvalid      login_token_invalid: not a token this console issued
│   ├── LoginTokenUsed     login_token_used: the token was used already (each signs in once)
│   └── LoginTokenExpired  login_token_expired: the token is older than its lifetime
└── OperatorKeyMismatch    operator_key_mismatch: the key file is not the policy's key for that operator
Forbidden (custody.errors)
└── CsrfRefused            csrf_refused: a form without this session's CSRF token (or a sign-in without the
                           confirmation page's)
InvalidRequest (custody.errors)
└── HostRefused            host_refused: a request whose Host is not one of the console's own names
"""

from __future__ import annotations

from custody.errors import Forbidden, InvalidRequest, Unauthorized


class NotSignedIn(Unauthorized):
    code = "not_signed_in"


class LoginTokenInvalid(Unauthorized):
    code = "login_token_invalid"


class LoginTokenUsed(LoginTokenInvalid):
    code = "login_token_used"


class LoginTokenExpired(LoginTokenInvalid):
    code = "login_token_expired"


class OperatorKeyMismatch(Unauthorized):
    code = "operator_key_mismatch"


class CsrfRefused(Forbidden):
    code = "csrf_refused"


class HostRefused(InvalidRequest):
    code = "host_refused"
