"""Issue 9.1, the worker's side: each process has its own session; at startup it hands back what its id holds."""

from __future__ import annotations

import threading

from lightly_protocol.models import ScheduledRunData
from lightly_worker.agent import WorkerAgent
from lightly_worker.api import SESSION_HEADER, ApiError, WorkerApi

WID, OTHER = "a" * 24, "b" * 24


def _row(sid: str, owner: str) -> ScheduledRunData:
    return ScheduledRunData.model_validate(
        {
            "id": sid,
            "datasetId": "d" * 24,
            "configId": "c" * 24,
            "priority": "MID",
            "runsOn": [],
            "state": "LOCKED",
            "createdAt": 1,
            "lastModifiedAt": 1,
            "owner": owner,
        }
    )


class OldServer:
    """A server without the session extension: the earlier process's run is still LOCKED under our id."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.handed: list[str] = []
        self.rows = [_row("1" * 24, WID), _row("2" * 24, OTHER)]

    def held_runs(self, worker_id: str) -> list[ScheduledRunData]:
        return [r for r in self.rows if r.owner == worker_id]

    def hand_back(self, dataset_id: str, worker_id: str, scheduled_id: str) -> None:
        if scheduled_id == "3" * 24:
            raise ApiError(409, "not the holder")
        self.handed.append(scheduled_id)


def test_startup_hands_back_runs_an_earlier_process_held() -> None:
    api = OldServer()
    agent = WorkerAgent({"shutdown_when_job_finished": False}, api, None)  # type: ignore[arg-type]
    agent.worker_id = WID
    agent.release_held_runs()
    assert api.handed == ["1" * 24]  # only ours
    api.rows.append(_row("3" * 24, WID))
    agent.release_held_runs()  # a refusal is logged, never raised


def test_every_process_has_its_own_session_and_sends_it_with_state_reports() -> None:
    import httpx

    seen: list[httpx.Request] = []
    one, two = WorkerApi("http://api", "tok"), WorkerApi("http://api", "tok")
    assert one.session != two.session and len(one.session) == 32
    one.http = httpx.Client(transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(204)))
    one.set_state(WID, "IDLE", "1.0")
    assert seen[0].headers[SESSION_HEADER] == one.session
