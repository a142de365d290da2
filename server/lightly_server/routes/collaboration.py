"""Sharing a dataset (Lightly's collaboration API): refused here, clearly.

Every dataset on this server belongs to one user (the token's) and is visible to no one else; users
have names, not e-mail addresses, and there are no teams. Sharing would need a grant that every dataset
route, the scheduling and the workers honour. Until then the share call is refused with a 400 that
says so, and the list of shares is truthfully empty (docs/server.md, Sharing).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from lightly_protocol import paths
from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import SharedAccessConfigCreateRequest
from lightly_protocol.paths import template

from .. import store
from ..deps import DatasetId, ServerDep, User
from ..errors import ApiError

router = APIRouter()

NOT_SUPPORTED = (
    "sharing datasets is not supported by this server: each user's datasets are visible only to that "
    "user (their token). To work on a dataset together, use the owner's token, or give each user their "
    "own dataset on the same datasource"
)


@router.post(
    template(paths.shared_access, "datasetId"),
    status_code=400,
    responses={400: {"description": "sharing is not supported by this server"}},
    tags=["collaboration"],
)
def share_dataset(
    dataset_id: DatasetId, body: SharedAccessConfigCreateRequest, user_id: User, server: ServerDep
) -> JSONResponse:
    with server.db.read() as conn:
        store.get_dataset(conn, user_id, dataset_id)
    raise ApiError(400, ApiErrorCode.BAD_REQUEST, NOT_SUPPORTED)


@router.get(template(paths.shared_access, "datasetId"), response_model=list[dict[str, str]], tags=["collaboration"])
def list_shares(dataset_id: DatasetId, user_id: User, server: ServerDep) -> JSONResponse:
    """Nobody but the owner has access: no shared-access config exists."""
    with server.db.read() as conn:
        store.get_dataset(conn, user_id, dataset_id)
    return JSONResponse([])
