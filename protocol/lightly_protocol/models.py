"""Pydantic models of the Lightly REST protocol, exactly as they travel on the wire.

Every model forbids unknown keys (the real client does too), uses camelCase aliases and is strict
about types: ids are 24 lowercase hex characters, timestamps integer milliseconds. Request models
validate what the server accepts; data models are what the server answers and what the worker
and operator parse.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .enums import (
    ArtifactStorageLocation,
    ArtifactType,
    Creator,
    DatasetType,
    DatasourcePurpose,
    DimensionalityReductionMethod,
    ImageType,
    LogLevel,
    Priority,
    RunState,
    S3Region,
    ScheduledState,
    SharedAccessType,
    TagCreator,
    WorkerState,
    WorkerType,
)
from .names import parse_legacy_k8s_worker_name

OID_PATTERN = r"^[a-f0-9]{24}$"

# The field patterns of lightly==1.5.26's generated models (lightly_api_field_patterns.tsv). The real
# client checks requests and answers against them; so does every model below that has the field.
#: worker and dataset names (DockerWorkerRegistryEntryData.name, DatasetData.name, ...)
NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9 _-]+$"
#: tag names (TagData.name, SelectionConfigV4EntryInput.tag_name, ...)
TAG_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9 .:;=@_-]+$"
#: task, score and auto-task names (SelectionConfigV4EntryInput.task/score, AutoTaskBase.name, ...)
TASK_PATTERN = r"^[a-zA-Z0-9_+=,.@:\/-]*$"
BIT_MASK_PATTERN = r"^0x[a-f0-9]+$"
URL_PATTERN = r"^https?:\/\/.+$"
KMS_KEY_PATTERN = r"^arn:aws:kms:[a-zA-Z0-9-]*:[0-9]{12}:key.+$"
IAM_ROLE_PATTERN = r"^arn:aws:iam::[0-9]{12}:role.+$"
EXTERNAL_ID_PATTERN = r"^[a-zA-Z0-9_+=,.@:\/-]+$"
#: longest name this server stores (the protocol declares no maximum; our columns hold 300)
MAX_NAME_LENGTH = 300

# ---- limits of what requests may carry (docs/server.md, "Limits"); each matches the column it is stored in
#: any string anywhere in a request (Text columns and JSON documents)
MAX_STRING_LENGTH = 65536
#: dockerVersion of workers and runs (String(200) columns)
MAX_VERSION_LENGTH = 200
#: one worker label or runsOn entry, and how many a list may hold
MAX_LABEL_LENGTH = 200
MAX_LABELS = 100
#: artifact fileName (String(1000)) and each filename of a selection; in UTF-8 bytes too (a selection's
#: filenames are keys of a unique index, and a PostgreSQL index entry holds at most ~2700 bytes)
MAX_FILENAME_LENGTH = 1000
MAX_FILENAME_BYTES = 2000
#: a log line's msg; group and origin
MAX_LOG_MESSAGE_LENGTH = 16384
MAX_LOG_FIELD_LENGTH = 200
#: log entries in one PUT .../logs
MAX_LOG_ENTRIES = 5000
#: a run's message
MAX_MESSAGE_LENGTH = MAX_STRING_LENGTH
#: datasource paths, URLs and keys; gcsCredentials (a JSON key file)
MAX_DATASOURCE_FIELD_LENGTH = 1000
MAX_GCS_CREDENTIALS_LENGTH = 65536
#: the largest int64, the bound of offsets and cursors (SQL BIGINT)
MAX_INT64 = 2**63 - 1

#: a filename: no control characters (C0, DEL, C1) and no Unicode line/paragraph separators, so that one
#: filename is always exactly one line of ``selected_filenames.txt`` and of a tag export
FILENAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]+$"
_FILENAME_RE = re.compile(FILENAME_PATTERN)

Oid = Annotated[str, Strict(), Field(pattern=OID_PATTERN, strict=True)]
#: a worker or dataset name in an answer
Name = Annotated[str, Strict(), Field(min_length=3, pattern=NAME_PATTERN, strict=True)]
#: a worker or dataset name in a request (also bounded by what the server stores)
NewName = Annotated[str, Strict(), Field(min_length=3, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN, strict=True)]
TagName = Annotated[str, Strict(), Field(min_length=3, max_length=MAX_NAME_LENGTH, pattern=TAG_NAME_PATTERN)]
TaskStr = Annotated[str, Strict(), Field(pattern=TASK_PATTERN)]
Ts = Annotated[int, Strict(), Field(ge=0, strict=True)]
Unit = Annotated[float, Strict(), Field(ge=0, le=1)]
Version = Annotated[str, Strict(), Field(max_length=MAX_VERSION_LENGTH)]
Label = Annotated[str, Strict(), Field(max_length=MAX_LABEL_LENGTH)]
Labels = Annotated[list[Label], Field(max_length=MAX_LABELS)]
DsStr = Annotated[str, Strict(), Field(max_length=MAX_DATASOURCE_FIELD_LENGTH)]


def _filename_bytes(value: str) -> str:
    if len(value) > MAX_FILENAME_BYTES // 4 and len(value.encode()) > MAX_FILENAME_BYTES:
        raise ValueError(f"filenames must be at most {MAX_FILENAME_BYTES} bytes in UTF-8 (got {len(value.encode())})")
    return value


Filename = Annotated[
    str,
    Strict(),
    Field(min_length=1, max_length=MAX_FILENAME_LENGTH, pattern=FILENAME_PATTERN),
    AfterValidator(_filename_bytes),
]


def filename_problem(name: str) -> str | None:
    """Why ``name`` is not an acceptable filename (one line of a filename list), or None."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_FILENAME_LENGTH:
        return f"must be at most {MAX_FILENAME_LENGTH} characters"
    if len(name.encode()) > MAX_FILENAME_BYTES:
        return f"must be at most {MAX_FILENAME_BYTES} bytes in UTF-8"
    if not _FILENAME_RE.match(name):
        return "must not contain control characters or line breaks (newline, tab, NUL, U+2028, ...)"
    return None


def artifact_name_problem(name: str) -> str | None:
    """Why an artifact ``fileName`` is unsafe to write below a download folder, or None.

    A relative path with ``/`` separators; no leading ``/``, no drive (``C:``), no backslash, no empty,
    ``.`` or ``..`` part, no control characters.
    """
    problem = filename_problem(name)
    if problem:
        return problem
    if name.startswith("/"):
        return "must be a relative path (no leading '/')"
    if "\\" in name:
        return "must use '/' as separator (no '\\')"
    if re.match(r"^[A-Za-z]:", name):
        return "must be a relative path (no drive letter)"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "must not contain empty, '.' or '..' path parts"
    return None


def safe_artifact_name(name: str, fallback: str) -> str:
    """A stored artifact name made safe to serve: unsafe parts dropped (names stored by older servers)."""
    if artifact_name_problem(name) is None:
        return name
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".", "..")]
    cleaned = "/".join("".join(ch for ch in p if _FILENAME_RE.match(ch)) for p in parts)
    cleaned = re.sub(r"^[A-Za-z]:", "", cleaned).strip("/")
    cleaned = "/".join(p for p in cleaned.split("/") if p not in ("", ".", ".."))[:MAX_FILENAME_LENGTH]
    return cleaned if cleaned and artifact_name_problem(cleaned) is None else fallback


def _artifact_name(value: str) -> str:
    problem = artifact_name_problem(value)
    if problem:
        raise ValueError(f"artifact fileName {value[:200]!r} {problem}")
    return value


ArtifactName = Annotated[
    str, Strict(), Field(min_length=1, max_length=MAX_FILENAME_LENGTH), AfterValidator(_artifact_name)
]


_NAME_RE = re.compile(NAME_PATTERN)


class Wire(BaseModel):
    """Base of every wire model: camelCase aliases, unknown keys rejected, strict types."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict, camelCase, without unset optional keys."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _string_problem(value: Any, where: str) -> str | None:
    """The first string in ``value`` (a request's raw JSON) that no column can store, or None."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return f"{at or 'value'}: must not contain NUL characters (\\u0000)"
            if len(v) > MAX_STRING_LENGTH:
                return f"{at or 'value'}: at most {MAX_STRING_LENGTH} characters (got {len(v)})"
        elif isinstance(v, dict):
            for k, item in v.items():
                stack.append((k, at))
                stack.append((item, f"{at}.{k}" if at else str(k)))
        elif isinstance(v, list):
            stack.extend((item, f"{at}[{i}]") for i, item in enumerate(v))
    return None


class Request(Wire):
    """Base of what clients send: besides each field's own rules, no string anywhere may hold a NUL
    character or exceed ``MAX_STRING_LENGTH`` (neither can be stored)."""

    @model_validator(mode="before")
    @classmethod
    def _storable_strings(cls, data: Any) -> Any:
        problem = _string_problem(data, "")
        if problem:
            raise ValueError(problem)
        return data


class CreateEntityResponse(Wire):
    id: Oid


# ---------------------------------------------------------------- workers


class WorkerCreateRequest(Request):
    name: NewName
    worker_type: WorkerType = WorkerType.FULL
    labels: Labels | None = None
    creator: Creator | None = None
    docker_version: Version | None = None


def _worker_name(value: str) -> str:
    if len(value) < 3 or not (_NAME_RE.match(value) or parse_legacy_k8s_worker_name(value)):
        raise ValueError(f"String should match pattern '{NAME_PATTERN}'")
    return value


#: a worker name in an answer: the protocol's pattern, or an operator name of the old dotted scheme, which
#: an operator or worker upgraded before its server must still read (this server renames those on start)
AnsweredWorkerName = Annotated[str, Strict(), AfterValidator(_worker_name)]


class WorkerData(Wire):
    id: Oid
    user_id: StrictStr
    name: AnsweredWorkerName
    worker_type: WorkerType
    state: WorkerState
    created_at: Ts
    last_modified_at: Ts
    labels: list[StrictStr]
    is_default: StrictBool | None = None
    docker_version: StrictStr | None = None


class WorkerUpdateRequest(Request):
    state: WorkerState
    docker_version: Version | None = None


# ---------------------------------------------------------------- datasets


class DatasetCreateRequest(Request):
    name: NewName
    type: DatasetType | None = None
    img_type: ImageType | None = None
    creator: Creator | None = None
    parent_dataset_id: Oid | None = None


class DatasetData(Wire):
    id: Oid
    name: Name
    user_id: StrictStr
    type: DatasetType
    n_samples: StrictInt
    size_in_bytes: StrictInt
    created_at: Ts
    last_modified_at: Ts
    img_type: ImageType | None = None
    datasources: list[Oid] | None = None
    parent_dataset_id: Oid | None = None


# ---------------------------------------------------------------- datasources


class _DatasourceBase(Request):
    id: Oid | None = None
    purpose: DatasourcePurpose
    thumb_suffix: DsStr | None = None
    full_path: DsStr


class DatasourceLocal(_DatasourceBase):
    type: Literal["LOCAL"]
    web_server_location: (
        Annotated[str, Strict(), Field(max_length=MAX_DATASOURCE_FIELD_LENGTH, pattern=URL_PATTERN)] | None
    ) = None


class DatasourceLightly(_DatasourceBase):
    type: Literal["LIGHTLY"]


class DatasourceS3(_DatasourceBase):
    type: Literal["S3"]
    s3_region: S3Region
    s3_access_key_id: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_DATASOURCE_FIELD_LENGTH)] = Field(
        alias="s3AccessKeyId"
    )
    s3_secret_access_key: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_DATASOURCE_FIELD_LENGTH)] = Field(
        alias="s3SecretAccessKey"
    )
    s3_server_side_encryption_kms_key: (
        Annotated[str, Strict(), Field(max_length=MAX_DATASOURCE_FIELD_LENGTH, pattern=KMS_KEY_PATTERN)] | None
    ) = Field(None, alias="s3ServerSideEncryptionKMSKey")


class DatasourceS3DelegatedAccess(_DatasourceBase):
    type: Literal["S3DelegatedAccess"]
    s3_region: S3Region
    s3_external_id: Annotated[
        str, Strict(), Field(min_length=10, max_length=MAX_DATASOURCE_FIELD_LENGTH, pattern=EXTERNAL_ID_PATTERN)
    ] = Field(alias="s3ExternalId")
    s3_arn: Annotated[
        str, Strict(), Field(min_length=12, max_length=MAX_DATASOURCE_FIELD_LENGTH, pattern=IAM_ROLE_PATTERN)
    ] = Field(alias="s3ARN")
    s3_server_side_encryption_kms_key: (
        Annotated[str, Strict(), Field(max_length=MAX_DATASOURCE_FIELD_LENGTH, pattern=KMS_KEY_PATTERN)] | None
    ) = Field(None, alias="s3ServerSideEncryptionKMSKey")


class DatasourceGCS(_DatasourceBase):
    type: Literal["GCS"]
    gcs_project_id: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_DATASOURCE_FIELD_LENGTH)]
    gcs_credentials: Annotated[str, Strict(), Field(max_length=MAX_GCS_CREDENTIALS_LENGTH)]


class DatasourceAzure(_DatasourceBase):
    type: Literal["AZURE"]
    account_name: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_DATASOURCE_FIELD_LENGTH)]
    account_key: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_DATASOURCE_FIELD_LENGTH)]


class DatasourceOBS(_DatasourceBase):
    type: Literal["OBS"]
    obs_endpoint: Annotated[
        str, Strict(), Field(min_length=1, max_length=MAX_DATASOURCE_FIELD_LENGTH, pattern=URL_PATTERN)
    ]
    obs_access_key_id: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_DATASOURCE_FIELD_LENGTH)]
    obs_secret_access_key: Annotated[str, Strict(), Field(min_length=1, max_length=MAX_DATASOURCE_FIELD_LENGTH)]


DatasourceConfig = Annotated[
    DatasourceLocal
    | DatasourceLightly
    | DatasourceS3
    | DatasourceS3DelegatedAccess
    | DatasourceGCS
    | DatasourceAzure
    | DatasourceOBS,
    Field(discriminator="type"),
]


class DatasourceRawSamplesRow(Wire):
    """One file of a datasource listing: its name relative to the datasource root, and a read URL."""

    file_name: StrictStr
    read_url: StrictStr


class DatasourceRawSamplesData(Wire):
    """A page of a datasource listing (also the metadata and predictions listings): ``cursor`` continues it
    while ``hasMore``."""

    has_more: StrictBool
    cursor: StrictStr
    data: list[DatasourceRawSamplesRow]


class DivideAndConquerCursorData(Wire):
    cursors: list[StrictStr]


class DatasourceConfigVerifyErrors(Wire):
    can_read: StrictStr | None = None
    can_write: StrictStr | None = None
    can_list: StrictStr | None = None
    can_overwrite: StrictStr | None = None


class DatasourceConfigVerifyData(Wire):
    can_read: StrictBool
    can_write: StrictBool
    can_list: StrictBool
    can_overwrite: StrictBool
    errors: DatasourceConfigVerifyErrors | None = None


class DatasourceProcessedUntilTimestampRequest(Request):
    processed_until_timestamp: Annotated[int, Strict(), Field(ge=0, le=MAX_INT64)]


class DatasourceProcessedUntilTimestampResponse(Wire):
    processed_until_timestamp: Ts


# ---------------------------------------------------------------- worker config V4


class CorrupctnessCheck(Wire):
    corruption_threshold: Unit | None = None


class InputExpiration(Wire):
    min_days_to_expiration: Annotated[float, Strict(), Field(ge=0)] | None = None
    handling_strategy: Literal["SKIP", "ABORT"] | None = None


class DockerDatasource(Wire):
    bypass_verify: StrictBool | None = None
    enable_datapool_update: StrictBool | None = None
    process_all: StrictBool | None = None
    input_expiration: InputExpiration | None = None


class DockerCrops(Wire):
    enable_upload: StrictBool | None = None
    enable_upload_for_tasks: list[StrictStr] | None = None


class DockerTraining(Wire):
    task_name: TaskStr | None = None


class DockerConfigV4(Wire):
    checkpoint: StrictStr | None = None
    checkpoint_run_id: Oid | None = None
    corruptness_check: CorrupctnessCheck | None = None
    datasource: DockerDatasource | None = None
    crops: DockerCrops | None = None
    embeddings: StrictStr | None = None
    enable_training: StrictBool | None = None
    training: DockerTraining | None = None
    normalize_embeddings: StrictBool | None = None
    num_processes: Annotated[int, Strict(), Field(ge=-1)] | None = None
    num_threads: Annotated[int, Strict(), Field(ge=-1)] | None = None
    output_image_format: StrictStr | None = None
    pretagging: StrictBool | None = None
    pretagging_upload: StrictBool | None = None
    relevant_filenames_file: StrictStr | None = None
    selected_sequence_length: Annotated[int, Strict(), Field(ge=1)] | None = None
    upload_report: StrictBool | None = None
    use_datapool: StrictBool | None = None
    shutdown_when_job_finished: StrictBool | None = None
    cache_size: Annotated[int, Strict(), Field(ge=-1)] | None = None
    # Extensions (not in Lightly's protocol; the unmodified client refuses them client-side, so
    # its users set them as a worker's CLI default, ``docker.parallelism=auto``): split the run into shards
    # of ``shard_size`` files that up to ``parallelism`` workers embed at once ("auto": every idle matching
    # worker). Absent or 1: one worker runs it, as before. docs/worker.md, docs/server.md "Shards".
    parallelism: Annotated[int, Strict(), Field(ge=1)] | Literal["auto"] | None = None
    shard_size: Annotated[int, Strict(), Field(ge=1)] | None = None


class LightlyCheckpointCallback(Wire):
    save_last: StrictBool | None = None


class LightlyLoader(Wire):
    batch_size: Annotated[int, Strict(), Field(ge=1)] | None = None
    shuffle: StrictBool | None = None
    num_workers: Annotated[int, Strict(), Field(ge=-1)] | None = None
    drop_last: StrictBool | None = None


class LightlyModel(Wire):
    name: Literal["resnet-18", "resnet-34", "resnet-50", "resnet-101", "resnet-152"] | None = None
    out_dim: Annotated[int, Strict(), Field(ge=1)] | None = None
    num_ftrs: Annotated[int, Strict(), Field(ge=1)] | None = None
    width: Annotated[int, Strict(), Field(ge=1)] | None = None


class LightlyTrainer(Wire):
    gpus: Annotated[int, Strict(), Field(ge=0)] | None = None
    max_epochs: Annotated[int, Strict(), Field(ge=0)] | None = None
    precision: Literal[16, 32] | None = None


class LightlyCriterion(Wire):
    temperature: Annotated[float, Strict(), Field(gt=0)] | None = None


class LightlyOptimizer(Wire):
    lr: Annotated[float, Strict(), Field(ge=0)] | None = None
    weight_decay: Unit | None = None


class LightlyCollate(Wire):
    input_size: Annotated[int, Strict(), Field(ge=1)] | None = None
    cj_prob: Unit | None = None
    cj_bright: Unit | None = None
    cj_contrast: Unit | None = None
    cj_sat: Unit | None = None
    cj_hue: Unit | None = None
    min_scale: Unit | None = None
    random_gray_scale: Unit | None = None
    gaussian_blur: Unit | None = None
    kernel_size: Annotated[float, Strict(), Field(ge=0)] | None = None
    sigmas: Annotated[list[Annotated[float, Strict(), Field(gt=0)]], Field(min_length=2, max_length=2)] | None = None
    vf_prob: Unit | None = None
    hf_prob: Unit | None = None
    rr_prob: Unit | None = None
    rr_degrees: Annotated[list[Annotated[float, Strict()]], Field(min_length=2, max_length=2)] | None = None


class LightlyConfigV3(Wire):
    seed: StrictInt | None = None
    checkpoint_callback: LightlyCheckpointCallback | None = None
    loader: LightlyLoader | None = None
    model: LightlyModel | None = None
    trainer: LightlyTrainer | None = None
    criterion: LightlyCriterion | None = None
    optimizer: LightlyOptimizer | None = None
    collate: LightlyCollate | None = None


class SelectionInput(Wire):
    type: Literal["EMBEDDINGS", "SCORES", "METADATA", "PREDICTIONS", "RANDOM"]
    task: TaskStr | None = None
    score: Annotated[str, Strict(), Field(min_length=1, pattern=TASK_PATTERN)] | None = None
    key: Annotated[str, Strict(), Field(min_length=1)] | None = None
    name: Literal["CLASS_DISTRIBUTION", "CATEGORY_COUNT"] | None = None
    dataset_id: Oid | None = None
    tag_name: TagName | None = None
    random_seed: StrictInt | None = None
    categories: Annotated[list[Annotated[str, Strict(), Field(min_length=1)]], Field(min_length=1)] | None = None


class TargetRange(Wire):
    min_sum: Annotated[float, Strict(), Field(ge=0)] | None = None
    max_sum: Annotated[float, Strict(), Field(ge=0)] | None = None


class SelectionStrategy(Wire):
    # COVERAGE_EXT: this worker's extension (ProbCover), not a Lightly strategy
    type: Literal["DIVERSITY", "WEIGHTS", "THRESHOLD", "BALANCE", "SIMILARITY", "TYPICALITY", "COVERAGE_EXT"]
    # this key keeps its snake_case name on the wire (no alias in the protocol)
    stopping_condition_minimum_distance: Annotated[float, Strict()] | None = Field(
        None, alias="stopping_condition_minimum_distance"
    )
    threshold: Annotated[float, Strict()] | None = None
    operation: Literal["SMALLER", "SMALLER_EQUAL", "BIGGER", "BIGGER_EQUAL"] | None = None
    target: dict[StrictStr, Annotated[float, Strict()]] | None = None
    num_nearest_neighbors: Annotated[int, Strict(), Field(ge=2)] | None = None
    stopping_condition_minimum_typicality: Annotated[float, Strict(), Field(gt=0)] | None = None
    strength: Annotated[float, Strict(), Field(ge=-1e9, le=1e9)] | None = None
    stopping_condition_max_sum: Annotated[float, Strict(), Field(ge=0)] | None = None
    target_range: TargetRange | None = None
    distribution: Literal["TARGET", "UNIFORM", "INPUT"] | None = None
    # extension (COVERAGE_EXT only): the ball radius delta; unset = chosen from the data
    coverage_radius_ext: Annotated[float, Strict(), Field(gt=0)] | None = Field(None, alias="coverage_radius_ext")


class SelectionEntry(Wire):
    input: SelectionInput
    strategy: SelectionStrategy


class AutoTaskTiling(Wire):
    type: Literal["TILING"]
    name: TaskStr
    num_rows: Annotated[int, Strict(), Field(ge=1)]
    num_cols: Annotated[int, Strict(), Field(ge=1)]
    overlap: Annotated[float, Strict(), Field(ge=0)] | None = None


class SelectionConfigV4(Wire):
    n_samples: Annotated[int, Strict(), Field(ge=-1)] | None = None
    proportion_samples: Unit | None = None
    strategies: Annotated[list[SelectionEntry], Field(min_length=1)]
    lightly_path_regex: Annotated[str, Strict(), Field(min_length=1)] | None = None
    auto_tasks: list[AutoTaskTiling] | None = None


class WorkerConfigV4(Wire):
    worker_type: WorkerType
    docker: DockerConfigV4 | None = None
    lightly: LightlyConfigV3 | None = None
    selection: SelectionConfigV4 | None = None


class WorkerConfigCreateRequest(Request):
    """POST /v1/docker/worker/config/vX. Only V4 is accepted by this server."""

    version: Literal["V4"]
    creator: Creator | None = None
    config: WorkerConfigV4


class WorkerConfigData(Wire):
    id: Oid
    version: Literal["V4"]
    created_at: Ts
    config: WorkerConfigV4
    config_orig: dict[str, Any] | None = None


# ---------------------------------------------------------------- scheduled runs


class ScheduledRunCreateRequest(Request):
    config_id: Oid
    priority: Priority
    runs_on: Labels | None = None
    creator: Creator | None = None


class ScheduledRunData(Wire):
    id: Oid
    dataset_id: Oid
    user_id: StrictStr | None = None
    config_id: Oid
    priority: Priority
    runs_on: list[StrictStr]
    state: ScheduledState
    created_at: Ts
    last_modified_at: Ts
    owner: Oid | None = None


class ScheduledRunUpdateRequest(Request):
    state: ScheduledState
    priority: Priority | None = None
    runs_on: Labels | None = None


# ---------------------------------------------------------------- runs


class RunCreateRequest(Request):
    docker_version: Version
    dataset_id: Oid | None = None
    scheduled_id: Oid | None = None
    config_id: Oid | None = None
    message: Annotated[str, Strict(), Field(max_length=MAX_MESSAGE_LENGTH)] | None = None
    creator: Creator | None = None


class ArtifactData(Wire):
    id: Oid
    type: ArtifactType
    file_name: StrictStr
    storage_location: ArtifactStorageLocation | None = None
    created_at: Ts | None = None


class RunData(Wire):
    id: Oid
    user_id: StrictStr
    docker_version: StrictStr
    state: RunState
    created_at: Ts
    last_modified_at: Ts
    archived: StrictBool | None = None
    dataset_id: Oid | None = None
    config_id: Oid | None = None
    scheduled_id: Oid | None = None
    message: StrictStr | None = None
    artifacts: list[ArtifactData] | None = None


class RunUpdateRequest(Request):
    state: RunState
    message: Annotated[str, Strict(), Field(max_length=MAX_MESSAGE_LENGTH)] | None = None
    ts: Ts | None = None


class LogLoad(Wire):
    cpu: Annotated[float, Strict(), Field(ge=0, le=100)] | None = None
    mem: Annotated[float, Strict(), Field(ge=0, le=100)] | None = None


class LogCreateEntry(Request):
    ts: Ts
    level: LogLevel
    group: Annotated[str, Strict(), Field(max_length=MAX_LOG_FIELD_LENGTH)]
    msg: Annotated[str, Strict(), Field(max_length=MAX_LOG_MESSAGE_LENGTH)]
    origin: Annotated[str, Strict(), Field(max_length=MAX_LOG_FIELD_LENGTH)] | None = None
    state: RunState | None = None
    load: LogLoad | None = None


class LogEntryData(Wire):
    ts: Ts
    level: LogLevel
    group: StrictStr | None = None
    origin: StrictStr | None = None
    msg: StrictStr
    state: RunState
    load: LogLoad | None = None


class LogData(Wire):
    cursor: Annotated[int, Strict(), Field(ge=0)] | None = None
    logs: list[LogEntryData]


class ArtifactCreateRequest(Request):
    file_name: ArtifactName
    type: ArtifactType
    storage_location: ArtifactStorageLocation | None = None


class ArtifactCreatedData(Wire):
    signed_write_url: StrictStr
    artifact_id: StrictStr


class RunSelectionRequest(Request):
    """Extension (not in Lightly's protocol): the selected filenames of a run.

    ``PUT /v1/docker/runs/{runId}/selection``; when the run reaches COMPLETED they become a tag of
    the run's dataset (``tagName``, default ``selected-<runId>``).
    """

    filenames: list[Filename]
    tag_name: TagName | None = None


# ---------------------------------------------------------------- tags


class TagData(Wire):
    id: Oid
    dataset_id: Oid
    prev_tag_id: Oid | None
    query_tag_id: Oid | None = None
    preselected_tag_id: Oid | None = None
    name: Annotated[str, Strict(), Field(min_length=3, pattern=TAG_NAME_PATTERN)]
    bit_mask_data: Annotated[str, Strict(), Field(pattern=BIT_MASK_PATTERN)]
    tot_size: StrictInt
    created_at: Ts
    last_modified_at: Ts | None = None
    run_id: Oid | None = None


class TagCreateRequest(Request):
    """A tag from a bitmask over the dataset's samples (``create_tag_from_filenames``)."""

    name: TagName
    prev_tag_id: Oid
    bit_mask_data: Annotated[str, Strict(), Field(pattern=BIT_MASK_PATTERN, max_length=MAX_STRING_LENGTH)]
    tot_size: Annotated[int, Strict(), Field(ge=0, le=MAX_INT64)]
    creator: TagCreator | None = None
    run_id: Oid | None = None


class LabelStudioTaskData(Wire):
    image: StrictStr
    lightly_file_name: StrictStr | None = None


class LabelStudioTask(Wire):
    """One task of Label Studio's basic JSON import format."""

    id: StrictInt
    data: LabelStudioTaskData


class LabelBoxV4DataRow(Wire):
    """One data row of Labelbox's (v4) JSON import; Lightly spells these keys in snake_case."""

    model_config = ConfigDict(alias_generator=None, populate_by_name=True, extra="forbid")

    row_data: StrictStr
    global_key: StrictStr | None = None
    media_type: StrictStr | None = None


# ---------------------------------------------------------------- embeddings


class DatasetEmbeddingData(Wire):
    id: Oid
    name: StrictStr
    is_processed: StrictBool
    created_at: Ts
    is2d: StrictBool | None = Field(None, alias="is2d")  # Lightly's spelling, not to_camel's "is2D"


class WriteCSVUrlData(Wire):
    signed_write_url: StrictStr
    embedding_id: StrictStr


class Trigger2dEmbeddingJobRequest(Request):
    dimensionality_reduction_method: DimensionalityReductionMethod


# ---------------------------------------------------------------- collaboration


class SharedAccessConfigCreateRequest(Request):
    access_type: SharedAccessType
    users: list[Annotated[str, Strict(), Field(max_length=MAX_NAME_LENGTH)]] | None = None
    teams: list[Annotated[str, Strict(), Field(max_length=MAX_NAME_LENGTH)]] | None = None
    creator: Creator | None = None


# ---------------------------------------------------------------- misc


class ApiError(Wire):
    code: StrictStr
    error: StrictStr
    request_id: StrictStr | None = None
