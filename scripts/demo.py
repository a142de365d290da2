"""The demo behind ``scripts/demo``: the embedded default end to end, driven by the real lightly client.

Starts ``lightly-server`` on SQLite (under ./.demo), creates a token with ``lightly-server
create-token``, then uses lightly==1.5.26's unmodified ``ApiWorkflowClient`` to register a worker,
create a dataset, set a LOCAL datasource and schedule a selection run, and shows what a worker
would see. ``--keep-running`` leaves the server up and prints how to point your own scripts at it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep-running", action="store_true", help="leave the server running afterwards")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    args = parser.parse_args()

    work = ROOT / ".demo"
    work.mkdir(exist_ok=True)
    db_url = f"sqlite:///{work / 'lightly-server.sqlite3'}"
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent

    token = subprocess.run(
        [str(bin_dir / "lightly-server"), "create-token", "--database", db_url, "--user", "demo"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"1. created a token for user 'demo' (stored only as a hash in {work / 'lightly-server.sqlite3'})")

    log = open(work / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [str(bin_dir / "lightly-server"), "serve", "--port", str(port), "--database", db_url],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            if server.poll() is not None:
                print((work / "server.log").read_text()[-3000:])
                return 1
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"2. lightly-server is serving on {url} (OpenAPI document: {url}/docs)")

        os.environ["LIGHTLY_SERVER_LOCATION"] = url
        os.environ["LIGHTLY_DID_VERSION_CHECK"] = "True"
        for var in ("ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "all_proxy", "https_proxy", "http_proxy"):
            os.environ.pop(var, None)
        from lightly.api import ApiWorkflowClient

        client = ApiWorkflowClient(token=token)
        worker_id = client.register_compute_worker(name="demo-worker", labels=["gpu"])
        print(f"3. registered worker 'demo-worker' with labels ['gpu'] -> worker id {worker_id}")

        name = f"demo-dataset-{secrets.token_hex(3)}"
        client.create_dataset(name)
        print(f"4. created dataset {name!r} -> dataset id {client.dataset_id}")

        client.set_local_config(relative_path="", purpose="INPUT")
        client.set_local_config(relative_path="", purpose="LIGHTLY")
        print("5. set LOCAL datasources (INPUT at /input_mount, LIGHTLY at /lightly_mount)")

        scheduled_id = client.schedule_compute_worker_run(
            worker_config={"shutdown_when_job_finished": False},
            selection_config={
                "n_samples": 10,
                "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
            },
            runs_on=["gpu"],
        )
        print(f"6. scheduled a DIVERSITY selection of 10 samples -> scheduled run {scheduled_id}")

        info = client.get_compute_worker_run_info(scheduled_id)
        print(f"7. run info: state={info.state} message={info.message!r}")

        queue = httpx.get(
            f"{url}/v1/docker/worker/{worker_id}/schedule", params={"token": token, "state": "OPEN"}, timeout=10
        ).json()
        print(f"8. what worker {worker_id} sees in its queue: {[(r['id'], r['priority']) for r in queue]}")
        print("   (a worker that locks it, creates the run and reports COMPLETED finishes the flow;")
        print("    the selection worker itself lands with the worker issue)")

        if args.keep_running:
            print(f"\nServer running (pid {server.pid}). Use it from your own scripts:")
            print(f"  export LIGHTLY_SERVER_LOCATION={url}")
            print(
                "  export LIGHTLY_TOKEN=<the token; create more with: .venv/bin/lightly-server create-token "
                f"--database {db_url} --user NAME>"
            )
            print("Press Ctrl+C to stop.")
            server.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
