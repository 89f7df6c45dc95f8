"""Signing in and out: the sign-in page (how to get a link), the one-time link's confirmation page (which sets
the nonce cookie its form's POST must bring back: no sign-in from another site's form), the POST that spends the
token and sets the session cookie, and signing out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from custody.console.auth import (
    COOKIE,
    LOGIN_COOKIE,
    Signed,
    check_csrf,
    check_login_confirmation,
    login_confirmation,
    peek_token,
    redeem,
    sign_out,
)
from custody.console.deps import Services, services, signed_in
from custody.console.render import page

router = APIRouter()


@router.get("/signin")
def signin_page() -> Response:
    return page("signin.html")


def _secure(request: Request, svc: Services) -> bool:
    secure = svc.settings.secure_cookie
    return request.url.scheme == "https" if secure is None else secure


@router.get("/login")
def login_page(request: Request, svc: Annotated[Services, Depends(services)], token: str = "") -> Response:
    """The link's page: it says who the link signs in and offers the button; opening it spends nothing (link
    previews and prefetchers open links too). It sets the nonce the button's POST must come back with."""
    operator = peek_token(svc.store, token, svc.clock.now())
    nonce = secrets.token_urlsafe(32)
    response = page("login.html", operator=operator, token=token, confirm=login_confirmation(nonce))
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request, svc), path="/login"
    )
    return response


@router.post("/login")
def login(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    token: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    check_login_confirmation(request.cookies.get(LOGIN_COOKIE), confirm)  # before the token is spent
    signed = redeem(svc.store, svc.policies, token, svc.clock.now(), svc.settings.session_ttl)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    response.set_cookie(
        COOKIE,
        signed.token,
        max_age=svc.settings.session_ttl,
        httponly=True,
        samesite="strict",
        secure=_secure(request, svc),
        path="/",
    )
    return response


@router.post("/signout")
def signout(
    svc: Annotated[Services, Depends(services)],
    signed: Annotated[Signed, Depends(signed_in)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(signed.token, csrf)
    sign_out(svc.store, signed, svc.clock.now())
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
