"""The demo behind ``scripts/demo``: the whole chain on the embedded default, on this machine.

1. starts ``lightly-server`` on SQLite (under ./.demo) and creates a token with ``lightly-server create-token``;
2. generates a sample image folder (with one corrupt file and one exact duplicate);
3. starts a ``lightly-worker`` in waiting mode (as a pod of a LightlyWorker fleet would run it);
4. uses lightly==1.5.26's unmodified ``ApiWorkflowClient`` to create a dataset, set LOCAL
   datasources and schedule a selection with the recommended strategies (DIVERSITY + TYPICALITY,
   ``lightly_worker.selection.advice.RECOMMENDED_STRATEGIES``: the label-efficiency benchmark's best);
5. waits for the run, reads back the selection tag, downloads the artifacts, and prints where the
   report is. ``--keep-running`` leaves server and worker up for your own scripts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from lightly_devkit.data import make_dataset
from lightly_devkit.net import PROXY_VARS
from lightly_devkit.servers import create_token, loopback_env, start_server
from lightly_worker.selection.advice import RECOMMENDED_STRATEGIES

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-running", action="store_true", help="leave server and worker running afterwards")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--n-samples", type=int, default=10, help="how many images to select")
    args = parser.parse_args()

    run_id = time.strftime("%Y%m%d-%H%M%S")
    data = WORK / "runs" / run_id  # a fresh server database, dataset and worker per demo run
    data.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{data / 'lightly-server.sqlite3'}"
    bin_dir = Path(sys.executable).parent
    env = loopback_env()
    server_cli = [str(bin_dir / "lightly-server")]

    token = create_token(db_url, "demo", cli=server_cli, timeout=None)
    print(f"1. created a token for user 'demo' (stored only as a hash in {data / 'lightly-server.sqlite3'})")

    server_log = data / "server.log"
    procs: list[subprocess.Popen] = []
    try:
        try:
            server = start_server(
                db_url, server_log, port=args.port or None, log_level=None, env=env, cli=server_cli, append_log=True
            )
        except RuntimeError as exc:
            print(str(exc)[-3000:])
            raise SystemExit(f"the server did not start; see {server_log}") from None
        procs.append(server.proc)
        url = server.url
        print(f"2. lightly-server is serving on {url} (OpenAPI: {url}/docs)")

        make_dataset(data / "input")
        (data / "lightly").mkdir(parents=True, exist_ok=True)
        print(f"3. generated 62 sample images in {data / 'input'} (one corrupt, one exact duplicate)")

        token_file = data / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        worker_log = data / "worker.log"
        worker_env = {**env, "LIGHTLY_SERVER_LOCATION": url, "LIGHTLY_TOKEN_FILE": str(token_file)}
        with open(worker_log, "ab") as fh:
            procs.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "lightly-worker"),
                        "worker.name=demo-worker",
                        "worker.labels=[demo]",
                        f"input_mount={data / 'input'}",
                        f"lightly_mount={data / 'lightly'}",
                        f"output_dir={data / 'output'}",
                        "embedding.input_size=96",
                    ],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env=worker_env,
                )
            )
        print(f"4. started lightly-worker in waiting mode (log: {worker_log})")

        os.environ.update(LIGHTLY_SERVER_LOCATION=url, LIGHTLY_DID_VERSION_CHECK="True")
        for var in PROXY_VARS:
            os.environ.pop(var, None)
        from lightly.api import ApiWorkflowClient

        client = ApiWorkflowClient(token=token)
        name = f"demo-{run_id}-{secrets.token_hex(2)}"
        client.create_dataset(name)
        client.set_local_config(relative_path="", purpose="INPUT")
        client.set_local_config(relative_path="", purpose="LIGHTLY")
        scheduled_id = client.schedule_compute_worker_run(
            worker_config={"shutdown_when_job_finished": False},
            selection_config={
                "n_samples": args.n_samples,
                "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": dict(s)} for s in RECOMMENDED_STRATEGIES],
            },
            runs_on=["demo"],
        )
        kinds = " + ".join(s["type"] for s in RECOMMENDED_STRATEGIES)
        print(f"5. dataset {name!r}: scheduled a {kinds} selection of {args.n_samples} images -> {scheduled_id}")

        last = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            info = client.get_compute_worker_run_info(scheduled_id)
            if (info.state, info.message) != last:
                print(f"   run: {getattr(info.state, 'value', info.state)}: {info.message}")
                last = (info.state, info.message)
            if info.in_end_state():
                break
            if procs[1].poll() is not None:
                print(worker_log.read_text()[-3000:])
                return 1
            time.sleep(0.5)
        if not info.ended_successfully():
            print(f"the run did not complete; worker log: {worker_log}")
            return 1

        run = client.get_compute_worker_run_from_scheduled_run(scheduled_id)
        tag = client.get_compute_worker_run_tags(run.id)[0]
        selected = client.export_filenames_by_tag_name(tag.name).splitlines()
        artifacts = data / "artifacts"
        client.download_compute_worker_run_artifacts(run=run, output_dir=str(artifacts))
        print(f"6. tag {tag.name!r} holds the {len(selected)} selected images: {', '.join(selected)}")
        print(f"7. artifacts downloaded to {artifacts}")
        print(f"\nReport: {artifacts / 'report.html'}")
        print(f"Selected filenames: {artifacts / 'filenames' / 'selected_filenames.txt'}")

        if args.keep_running:
            print(f"\nServer ({url}) and worker keep running. Use them from your own scripts:")
            print(f"  export LIGHTLY_SERVER_LOCATION={url}")
            print(f"  export LIGHTLY_TOKEN=$(cat {token_file})")
            print("Press Ctrl+C to stop.")
            procs[0].wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
