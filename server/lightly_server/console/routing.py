"""The console's route class: a page's failure becomes an HTML answer, never the API's JSON.

* no valid session: 303 to the sign-in page (htmx fragments get ``HX-Redirect`` instead);
* a POST without its form's CSRF token: 403 saying to reload the page;
* an ``ApiError`` of the store (404 of another user's run, 409 of a run that cannot be canceled): its
  status and message on the error page.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from .web import PREFIX, CsrfRefused, SignInNeeded, browser, render


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "error.html", {"title": title, "message": message}, browser(request), status)


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                if request.headers.get("hx-request"):
                    return Response(status_code=204, headers={"HX-Redirect": f"{PREFIX}/login"})
                return Response(status_code=303, headers={"Location": f"{PREFIX}/login"})
            except CsrfRefused:
                return error_page(
                    request,
                    403,
                    "Form expired",
                    "This form was not sent from this console's own page (its CSRF token is missing or "
                    "belongs to another browser). Reload the page and send it again.",
                )
            except RequestValidationError:
                return error_page(request, 404, "Not found", "No such page: check the address (ids are 24 hex digits).")
            except ApiError as exc:
                return error_page(request, exc.status, f"Error {exc.status}", exc.message)

        return console_handler
