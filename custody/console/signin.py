"""Signing in and out: the sign-in page (how to get a link), the one-time link's confirmation page, the POST that
spends the token and sets the session cookie, and signing out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from custody.console.auth import COOKIE, Signed, check_csrf, peek_token, redeem, sign_out
from custody.console.deps import Services, services, signed_in
from custody.console.render import page

router = APIRouter()


@router.get("/signin")
def signin_page() -> Response:
    return page("signin.html")


@router.get("/login")
def login_page(svc: Annotated[Services, Depends(services)], token: str = "") -> Response:
    """The link's page: it says who the link signs in and offers the button; opening it spends nothing (link
    previews and prefetchers open links too)."""
    operator = peek_token(svc.store, token, svc.clock.now())
    return page("login.html", operator=operator, token=token)


@router.post("/login")
def login(
    request: Request, svc: Annotated[Services, Depends(services)], token: Annotated[str, Form()] = ""
) -> Response:
    signed = redeem(svc.store, svc.policies, token, svc.clock.now(), svc.settings.session_ttl)
    response = RedirectResponse("/", status_code=303)
    secure = svc.settings.secure_cookie
    response.set_cookie(
        COOKIE,
        signed.token,
        max_age=svc.settings.session_ttl,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" if secure is None else secure,
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
