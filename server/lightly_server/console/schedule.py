"""Schedule a run from a form: the recommended selection as the default, validated exactly as the API
validates (the request models, ``config_problems``, then the API's own config and schedule routes), with
each problem shown beside the field it names."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from lightly_protocol.enums import Priority
from lightly_protocol.models import ScheduledRunCreateRequest, WorkerConfigCreateRequest
from lightly_protocol.validation import config_problems
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import store
from ..deps import ServerDep
from ..errors import ApiError
from ..routes import configs as configs_api
from ..routes import schedule as schedule_api
from ..runtime import Server
from .routing import ConsoleRoute
from .web import PREFIX, Form, ObjectId, SignedIn, redirect, render

router = APIRouter(route_class=ConsoleRoute)

#: the recommended selection (docs/worker.md, "Which strategy when"): DIVERSITY and TYPICALITY on embeddings
RECOMMENDED_SELECTION: dict[str, Any] = {
    "n_samples": 100,
    "strategies": [
        {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}},
        {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "TYPICALITY"}},
    ],
}
DEFAULTS = {
    "selection": json.dumps(RECOMMENDED_SELECTION, indent=2),
    "docker": "{}",
    "priority": Priority.MID.value,
    "runs_on": "",
}
#: a problem's first words -> the field it is shown beside
FIELD_OF_PREFIX = (("selection", "selection"), ("docker", "docker"), ("priority", "priority"), ("runsOn", "runs_on"))
PLACEHOLDER_ID = "0" * 24


class FieldErrors(Exception):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("the form has problems")
        self.errors = errors


def field_of(problem: str) -> str:
    """The form field a problem sentence names (``general`` when none)."""
    for prefix, field in FIELD_OF_PREFIX:
        if problem.startswith(prefix):
            return field
    return "general"


def _add(errors: dict[str, list[str]], problem: str) -> None:
    errors.setdefault(field_of(problem), []).append(problem)


def _json_field(values: dict[str, str], name: str, errors: dict[str, list[str]]) -> Any:
    try:
        return json.loads(values[name] or "{}")
    except ValueError as exc:
        errors.setdefault(name, []).append(f"{name}: not valid JSON ({exc})")
        return None


def _pydantic_problems(exc: ValidationError, skip: int) -> list[str]:
    """Each error as ``path.to.key: message``, the first ``skip`` parts of its path left out."""
    out = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"][skip:]) or "config"
        out.append(f"{where}: {e['msg']}")
    return out


def _config_request(selection: Any, docker: Any, errors: dict[str, list[str]]) -> WorkerConfigCreateRequest | None:
    try:
        config = WorkerConfigCreateRequest.model_validate(
            {"version": "V4", "config": {"worker_type": "FULL", "docker": docker, "selection": selection}}
        )
    except ValidationError as exc:
        for problem in _pydantic_problems(exc, 1):
            _add(errors, problem)
        return None
    for problem in config_problems(config.config):
        _add(errors, problem)
    return config


def build_requests(values: dict[str, str]) -> tuple[WorkerConfigCreateRequest, ScheduledRunCreateRequest]:
    """The API's two request models from the form, validated as the API validates them; ``FieldErrors``
    with every problem by field otherwise."""
    errors: dict[str, list[str]] = {}
    selection, docker = _json_field(values, "selection", errors), _json_field(values, "docker", errors)
    config = None if errors else _config_request(selection, docker, errors)
    labels = [x.strip() for x in values.get("runs_on", "").split(",") if x.strip()]
    body = {"configId": PLACEHOLDER_ID, "priority": values.get("priority", ""), "runsOn": labels}
    try:
        scheduled = ScheduledRunCreateRequest.model_validate(body)
    except ValidationError as exc:
        for problem in _pydantic_problems(exc, 0):
            _add(errors, problem)
    if errors or config is None:
        raise FieldErrors(errors)
    return config, scheduled


def schedule(server: Server, user_id: str, dataset_id: str, values: dict[str, str]) -> str:
    """Create the config and schedule the run through the API's own routes; the id of the scheduled run."""
    with server.db.read() as conn:
        store.get_dataset(conn, user_id, dataset_id)  # 404 before anything is created
    config, scheduled = build_requests(values)
    created = configs_api.create_config(config, user_id, server)
    config_id = json.loads(bytes(created.body))["id"]
    try:
        answer = schedule_api.schedule_run(
            dataset_id, scheduled.model_copy(update={"config_id": config_id}), user_id, server, False
        )
    except ApiError as exc:
        if exc.status != 400:
            raise
        errors: dict[str, list[str]] = {}
        for problem in exc.message.split("; "):
            _add(errors, problem)
        raise FieldErrors(errors) from None
    return str(json.loads(bytes(answer.body))["id"])


def _form_context(
    server: Server, user_id: str, dataset_id: str, values: dict[str, str], errors: dict[str, list[str]]
) -> dict[str, Any]:
    with server.db.read() as conn:
        dataset = store.get_dataset(conn, user_id, dataset_id)
    return {"dataset": dataset, "values": values, "errors": errors, "priorities": [p.value for p in Priority]}


@router.get(f"{PREFIX}/datasets/{{dataset_id}}/schedule")
async def schedule_form(request: Request, viewer: SignedIn, server: ServerDep, dataset_id: ObjectId) -> Response:
    context = await run_in_threadpool(_form_context, server, viewer.user_id, dataset_id, dict(DEFAULTS), {})
    return render(request, "schedule.html", context, viewer.browser)


@router.post(f"{PREFIX}/datasets/{{dataset_id}}/schedule")
async def schedule_post(
    request: Request, viewer: SignedIn, server: ServerDep, fields: Form, dataset_id: ObjectId
) -> Response:
    values = {k: fields.get(k, "") for k in DEFAULTS}
    try:
        sid = await run_in_threadpool(schedule, server, viewer.user_id, dataset_id, values)
    except FieldErrors as exc:
        context = await run_in_threadpool(_form_context, server, viewer.user_id, dataset_id, values, exc.errors)
        return render(request, "schedule.html", context, viewer.browser, 400)
    return redirect(f"{PREFIX}/datasets/{dataset_id}?scheduled={sid}")
