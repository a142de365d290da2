"""The paths of Lightly's REST protocol that the worker, the operator, the bench and the tests call.

One place for them: a client builds a path here and never writes ``/v1/...`` itself, and the
server's routes declare theirs from the same builders: ``template(run_logs, "runId")`` is the route
template ``/v1/docker/runs/{runId}/logs``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "CONFIGS",
    "DATASETS",
    "DEFAULT_WORKER",
    "EXT",
    "HEALTHZ",
    "METRICS",
    "PIP_LATEST",
    "PIP_MINIMUM",
    "RUNS",
    "RUNS_COUNT",
    "SCHEDULE",
    "SHARDS_SUMMARY",
    "WORKERS",
    "artifact_confirm",
    "artifact_download",
    "artifact_read_url",
    "artifact_upload",
    "config",
    "dataset",
    "dataset_embeddings",
    "dataset_mappings",
    "dataset_schedule",
    "dataset_scheduled_run",
    "dataset_tags",
    "datasets_by_name",
    "datasource",
    "datasource_embeddings_file",
    "datasource_file_head",
    "datasource_list",
    "datasource_list_dnc",
    "datasource_metadata_file",
    "datasource_metadata_list",
    "datasource_metadata_list_dnc",
    "datasource_predictions_file",
    "datasource_predictions_list",
    "datasource_predictions_list_dnc",
    "datasource_predictions_write_url",
    "datasource_processed_until",
    "datasource_read_redirect",
    "datasource_read_url",
    "datasource_verify",
    "datasource_write_url",
    "datasources_all",
    "embedding",
    "embedding_2d_job",
    "embedding_csv",
    "embedding_read_url",
    "embeddings_write_url",
    "run",
    "run_artifacts",
    "run_logs",
    "run_of_scheduled",
    "run_selection",
    "run_tags",
    "runs_of_dataset",
    "sample_read_redirect",
    "sample_read_url",
    "scheduled_run",
    "scheduled_shards",
    "scheduled_shards_claim",
    "shard",
    "shard_files",
    "shard_result",
    "shared_access",
    "tag",
    "tag_export_filenames",
    "tag_export_label_box_v4",
    "tag_export_label_studio",
    "tag_filenames",
    "template",
    "worker",
    "worker_schedule",
    "worker_work",
]

#: the user's workers: POST registers one, GET lists them
WORKERS = "/v1/docker/worker"
#: the worker the token's user gets when they name none
DEFAULT_WORKER = f"{WORKERS}/default"
#: the user's scheduled runs, filtered by ``state`` and ``labels``
SCHEDULE = f"{WORKERS}/schedule"
#: worker configs: POST creates one
CONFIGS = f"{WORKERS}/config/vX"
#: the user's datasets: POST creates one
DATASETS = "/v1/datasets"
#: runs: POST creates one
RUNS = "/v1/docker/runs"
#: how many runs the user has (GET, a bare number as a JSON string)
RUNS_COUNT = f"{RUNS}/count"
#: the oldest lightly client this server answers (GET)
PIP_MINIMUM = "/v1/versions/pip/minimum"
#: the lightly client version this server speaks (GET)
PIP_LATEST = "/v1/versions/pip/latest"
#: liveness and readiness (the database answers)
HEALTHZ = "/healthz"
#: Prometheus metrics
METRICS = "/metrics"


def template(build: Callable[..., str], *names: str) -> str:
    """The route template of a builder: each argument becomes the ``{name}`` placeholder of a route."""
    return build(*(f"{{{name}}}" for name in names))


def worker(worker_id: str) -> str:
    """One worker: GET, PUT (state), DELETE."""
    return f"{WORKERS}/{worker_id}"


def worker_schedule(worker_id: str) -> str:
    """The scheduled runs one worker may take (``state=OPEN``, optional ``waitSeconds`` long poll)."""
    return f"{WORKERS}/{worker_id}/schedule"


def scheduled_run(dataset_id: str, worker_id: str, scheduled_id: str) -> str:
    """One scheduled run as seen by one worker: PUT ``{"state": "LOCKED" | "OPEN"}``."""
    return f"{DATASETS}/{dataset_id}/docker/worker/{worker_id}/schedule/{scheduled_id}"


def config(config_id: str) -> str:
    return f"{CONFIGS}/{config_id}"


def dataset_schedule(dataset_id: str) -> str:
    """A dataset's scheduled runs: POST schedules one, GET lists them (``states``)."""
    return f"{DATASETS}/{dataset_id}/docker/worker/schedule"


def datasource(dataset_id: str) -> str:
    """A dataset's datasource (``purpose`` query parameter)."""
    return f"{DATASETS}/{dataset_id}/datasource"


def datasource_list(dataset_id: str) -> str:
    """The files of a dataset's datasource, paged by ``cursor`` (``purpose``, ``prefix``, ``pageSize``: extensions)."""
    return f"{DATASETS}/{dataset_id}/datasource/list"


def datasource_list_dnc(dataset_id: str) -> str:
    """The cursors that together cover the listing (``dncShards``), each continued with ``datasource_list``."""
    return f"{DATASETS}/{dataset_id}/datasource/list/dnc"


def datasource_metadata_list(dataset_id: str) -> str:
    """The files under ``.lightly/metadata/`` of the LIGHTLY datasource, paged by ``cursor``."""
    return f"{DATASETS}/{dataset_id}/datasource/metadata/list"


def datasource_metadata_list_dnc(dataset_id: str) -> str:
    return f"{DATASETS}/{dataset_id}/datasource/metadata/list/dnc"


def datasource_predictions_list(dataset_id: str) -> str:
    """The files under ``.lightly/predictions/{taskName}/`` of the LIGHTLY datasource, paged by ``cursor``."""
    return f"{DATASETS}/{dataset_id}/datasource/predictions/list"


def datasource_predictions_list_dnc(dataset_id: str) -> str:
    return f"{DATASETS}/{dataset_id}/datasource/predictions/list/dnc"


def datasource_file_head(dataset_id: str) -> str:
    """A presigned HEAD URL of one file of the INPUT datasource (``fileName``), a JSON string."""
    return f"{DATASETS}/{dataset_id}/datasource/fileHEAD"


def datasource_metadata_file(dataset_id: str) -> str:
    """A presigned GET URL of ``.lightly/metadata/{fileName}``, a JSON string."""
    return f"{DATASETS}/{dataset_id}/datasource/metadata/file"


def datasource_predictions_file(dataset_id: str) -> str:
    """A presigned GET URL of ``.lightly/predictions/{fileName}``, a JSON string."""
    return f"{DATASETS}/{dataset_id}/datasource/predictions/file"


def datasource_embeddings_file(dataset_id: str) -> str:
    """A presigned GET URL of ``.lightly/embeddings/{fileName}``, a JSON string."""
    return f"{DATASETS}/{dataset_id}/datasource/embeddings/file"


def datasource_predictions_write_url(dataset_id: str) -> str:
    """A presigned PUT URL of ``.lightly/predictions/{fileName}``, a JSON string."""
    return f"{DATASETS}/{dataset_id}/datasource/predictions/writeUrl"


def datasource_read_redirect(dataset_id: str) -> str:
    """GET ``?path=``: a redirect to a fresh presigned GET URL (a signed URL: ``expires``, ``signature``)."""
    return f"{DATASETS}/{dataset_id}/datasource/readurlRedirect"


def datasource_verify(dataset_id: str) -> str:
    """GET: can the server list, read, write and overwrite the datasource (the provider's error per check)."""
    return f"{DATASETS}/{dataset_id}/datasource/verify"


def datasource_processed_until(dataset_id: str) -> str:
    """GET/PUT ``processedUntilTimestamp`` (unix seconds) of the INPUT datasource."""
    return f"{DATASETS}/{dataset_id}/datasource/processedUntilTimestamp"


def datasource_read_url(dataset_id: str) -> str:
    """Extension: a fresh presigned GET URL of one file (``purpose``, ``fileName``), a JSON string."""
    return f"{DATASETS}/{dataset_id}/datasource/readUrl"


def datasource_write_url(dataset_id: str) -> str:
    """Extension: a presigned PUT URL of one file of the LIGHTLY datasource (``fileName``), a JSON string."""
    return f"{DATASETS}/{dataset_id}/datasource/writeUrl"


def run(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


def run_logs(run_id: str) -> str:
    return f"{RUNS}/{run_id}/logs"


def run_selection(run_id: str) -> str:
    return f"{RUNS}/{run_id}/selection"


def run_artifacts(run_id: str) -> str:
    return f"{RUNS}/{run_id}/artifacts"


def artifact_confirm(run_id: str, artifact_id: str) -> str:
    return f"{RUNS}/{run_id}/artifacts/{artifact_id}/confirmUpload"


def runs_of_dataset(dataset_id: str) -> str:
    return f"{RUNS}/query/datasetId/{dataset_id}"


def run_of_scheduled(scheduled_id: str) -> str:
    """The run a worker started for a scheduled run (404 until one did)."""
    return f"{RUNS}/schedule/{scheduled_id}"


def run_tags(run_id: str) -> str:
    """The tags a run's selection became."""
    return f"{RUNS}/{run_id}/tags"


def artifact_read_url(run_id: str, artifact_id: str) -> str:
    """GET: a signed download URL of an uploaded artifact."""
    return f"{RUNS}/{run_id}/artifacts/{artifact_id}/readurl"


def artifact_upload(artifact_id: str) -> str:
    """PUT the artifact's content (a signed URL: ``expires`` and ``signature``, no token)."""
    return f"/v1/artifacts/{artifact_id}/upload"


def artifact_download(artifact_id: str) -> str:
    """GET the artifact's content (a signed URL: ``expires`` and ``signature``, no token)."""
    return f"/v1/artifacts/{artifact_id}/download"


def dataset(dataset_id: str) -> str:
    return f"{DATASETS}/{dataset_id}"


def datasets_by_name(name: str) -> str:
    """The user's datasets named so (``exact=true``) or whose names start so."""
    return f"{DATASETS}/query/name/{name}"


def dataset_mappings(dataset_id: str) -> str:
    """The dataset's sample filenames in sample order (``field=fileName``, paged)."""
    return f"{DATASETS}/{dataset_id}/mappings"


def datasources_all(dataset_id: str) -> str:
    """Every datasource of a dataset, one per purpose."""
    return f"{DATASETS}/{dataset_id}/datasource/all"


def dataset_scheduled_run(dataset_id: str, scheduled_id: str) -> str:
    """One scheduled run of a dataset: PUT cancels it while OPEN."""
    return f"{DATASETS}/{dataset_id}/docker/worker/schedule/{scheduled_id}"


def dataset_tags(dataset_id: str) -> str:
    return f"{DATASETS}/{dataset_id}/tags"


def tag(dataset_id: str, tag_id: str) -> str:
    return f"{DATASETS}/{dataset_id}/tags/{tag_id}"


def tag_filenames(dataset_id: str, tag_id: str) -> str:
    """The tag's filenames as a JSON list."""
    return f"{DATASETS}/{dataset_id}/tags/{tag_id}/filenames"


def tag_export_filenames(dataset_id: str, tag_id: str) -> str:
    """The tag's filenames (or read URLs, or datasource locations: ``fileNameFormat``) as one
    newline-separated JSON string (paged)."""
    return f"{DATASETS}/{dataset_id}/tags/{tag_id}/export/basic/filenames"


def tag_export_label_studio(dataset_id: str, tag_id: str) -> str:
    """The tag's samples as Label Studio tasks (paged)."""
    return f"{DATASETS}/{dataset_id}/tags/{tag_id}/export/LabelStudio/tasks"


def tag_export_label_box_v4(dataset_id: str, tag_id: str) -> str:
    """The tag's samples as Labelbox (v4) data rows (paged)."""
    return f"{DATASETS}/{dataset_id}/tags/{tag_id}/export/LabelBoxV4/datarows"


def sample_read_url(dataset_id: str, sample_id: str) -> str:
    """GET: a read URL of one sample's image (``type=full``)."""
    return f"{DATASETS}/{dataset_id}/samples/{sample_id}/readurl"


def sample_read_redirect(dataset_id: str, sample_id: str) -> str:
    """GET the sample's bytes (a signed URL: ``expires`` and ``signature``, no token)."""
    return f"{DATASETS}/{dataset_id}/samples/{sample_id}/readurlRedirect"


def dataset_embeddings(dataset_id: str) -> str:
    """The dataset's embeddings, newest first."""
    return f"{DATASETS}/{dataset_id}/embeddings"


def embeddings_write_url(dataset_id: str) -> str:
    """GET ``?name=``: a new embedding and the signed URL to PUT its CSV to."""
    return f"{DATASETS}/{dataset_id}/embeddings/writeCSVUrl"


def embedding(dataset_id: str, embedding_id: str) -> str:
    """One embedding: DELETE."""
    return f"{DATASETS}/{dataset_id}/embeddings/{embedding_id}"


def embedding_read_url(dataset_id: str, embedding_id: str) -> str:
    """GET: a signed download URL of the embedding's CSV."""
    return f"{DATASETS}/{dataset_id}/embeddings/{embedding_id}/readCSVUrl"


def embedding_2d_job(dataset_id: str, embedding_id: str) -> str:
    """POST: ask for a 2-d projection (acknowledged, not computed: docs/server.md)."""
    return f"{DATASETS}/{dataset_id}/embeddings/{embedding_id}/trigger2dEmbeddingsJob"


def embedding_csv(embedding_id: str) -> str:
    """PUT (upload) or GET (download) an embedding's CSV (a signed URL: ``expires``, ``signature``)."""
    return f"/v1/embeddings/{embedding_id}/csv"


def shared_access(dataset_id: str) -> str:
    """A dataset's shared-access configs (sharing is refused here: docs/server.md)."""
    return f"{DATASETS}/{dataset_id}/collaboration/access"


# ---- extensions (not in Lightly's protocol) under one prefix: shards of split runs (docs/server.md, Shards)

#: the prefix of this server's extension endpoints
EXT = "/v1/ext"
#: shard counts of the user's unfinished scheduled runs (GET, the operator's queue depth)
SHARDS_SUMMARY = f"{EXT}/shards/summary"


def scheduled_shards(scheduled_id: str) -> str:
    """A scheduled run's shard plan: PUT publishes the listing (coordinator), GET reads the plan."""
    return f"{EXT}/scheduled/{scheduled_id}/shards"


def scheduled_shards_claim(scheduled_id: str) -> str:
    """POST: the coordinator takes the next OPEN shard of its own run (204 when none is OPEN)."""
    return f"{EXT}/scheduled/{scheduled_id}/shards/claim"


def worker_work(worker_id: str) -> str:
    """The extended long poll of an idle worker: a shard first, else the scheduled runs (``waitSeconds``)."""
    return f"{EXT}/workers/{worker_id}/work"


def shard(shard_id: str) -> str:
    """One shard: PUT heartbeats it (LEASED) or hands it back (OPEN)."""
    return f"{EXT}/shards/{shard_id}"


def shard_files(shard_id: str) -> str:
    """GET: the shard's filenames, in order."""
    return f"{EXT}/shards/{shard_id}/files"


def shard_result(shard_id: str) -> str:
    """PUT (the holder, ``workerId``) uploads the binary result; GET downloads it once DONE."""
    return f"{EXT}/shards/{shard_id}/result"
