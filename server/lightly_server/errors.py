"""API errors, answered as Lightly's ``{"code": ..., "error": ...}`` body."""

from lightly_protocol.enums import ApiErrorCode


class ApiError(Exception):
    def __init__(self, status: int, code: ApiErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = str(code)
        self.message = message
        #: extra response headers (e.g. Retry-After)
        self.headers: dict[str, str] = {}


def not_found(code: ApiErrorCode, what: str, ident: str) -> ApiError:
    return ApiError(404, code, f"{what} {ident} does not exist (or belongs to another user)")


def bad_request(message: str) -> ApiError:
    return ApiError(400, ApiErrorCode.BAD_REQUEST, message)


def conflict(message: str, code: ApiErrorCode = ApiErrorCode.CONFLICT) -> ApiError:
    return ApiError(409, code, message)
