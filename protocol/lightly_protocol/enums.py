"""Enumerations of the Lightly protocol, with their exact wire strings."""

from enum import StrEnum


class Creator(StrEnum):
    UNKNOWN = "UNKNOWN"
    USER_WEBAPP = "USER_WEBAPP"
    USER_PIP = "USER_PIP"
    USER_PIP_LIGHTLY_MAGIC = "USER_PIP_LIGHTLY_MAGIC"
    USER_WORKER = "USER_WORKER"


class TagCreator(StrEnum):
    UNKNOWN = "UNKNOWN"
    USER_WEBAPP = "USER_WEBAPP"
    USER_PIP = "USER_PIP"
    USER_PIP_LIGHTLY_MAGIC = "USER_PIP_LIGHTLY_MAGIC"
    USER_WORKER = "USER_WORKER"
    SAMPLER_ACTIVE_LEARNING = "SAMPLER_ACTIVE_LEARNING"
    SAMPLER_CORAL = "SAMPLER_CORAL"
    SAMPLER_CORESET = "SAMPLER_CORESET"
    SAMPLER_RANDOM = "SAMPLER_RANDOM"


class DatasetType(StrEnum):
    CROPS = "Crops"
    IMAGES = "Images"
    VIDEOS = "Videos"


class ImageType(StrEnum):
    FULL = "full"
    THUMBNAIL = "thumbnail"
    META = "meta"


class WorkerType(StrEnum):
    FULL = "FULL"


class WorkerState(StrEnum):
    OFFLINE = "OFFLINE"
    CRASHED = "CRASHED"
    IDLE = "IDLE"
    BUSY = "BUSY"


class ScheduledState(StrEnum):
    OPEN = "OPEN"
    LOCKED = "LOCKED"
    DONE = "DONE"
    CANCELED = "CANCELED"


class Priority(StrEnum):
    LOW = "LOW"
    MID = "MID"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


#: dispatch order: higher rank first, then FIFO
PRIORITY_RANK = {Priority.LOW: 0, Priority.MID: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}


class RunState(StrEnum):
    STARTED = "STARTED"
    INITIALIZING = "INITIALIZING"
    LOADING_DATASET = "LOADING_DATASET"
    LOADING_METADATA = "LOADING_METADATA"
    LOADING_PREDICTION = "LOADING_PREDICTION"
    CHECKING_CORRUPTNESS = "CHECKING_CORRUPTNESS"
    INITIALIZING_OBJECT_CROPS = "INITIALIZING_OBJECT_CROPS"
    COMPUTING_METADATA = "COMPUTING_METADATA"
    TRAINING = "TRAINING"
    EMBEDDING = "EMBEDDING"
    EMBEDDING_OBJECT_CROPS = "EMBEDDING_OBJECT_CROPS"
    PRETAGGING = "PRETAGGING"
    COMPUTING_ACTIVE_LEARNING_SCORES = "COMPUTING_ACTIVE_LEARNING_SCORES"
    SAMPLING = "SAMPLING"
    EMBEDDING_FULL_IMAGES = "EMBEDDING_FULL_IMAGES"
    SAVING_RESULTS = "SAVING_RESULTS"
    UPLOADING_DATASET = "UPLOADING_DATASET"
    GENERATING_REPORT = "GENERATING_REPORT"
    UPLOADING_REPORT = "UPLOADING_REPORT"
    UPLOADED_REPORT = "UPLOADED_REPORT"
    UPLOADING_ARTIFACTS = "UPLOADING_ARTIFACTS"
    UPLOADED_ARTIFACTS = "UPLOADED_ARTIFACTS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    ABORTED = "ABORTED"


TERMINAL_RUN_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CRASHED, RunState.ABORTED})


class ArtifactType(StrEnum):
    LOG = "LOG"
    MEMLOG = "MEMLOG"
    CHECKPOINT = "CHECKPOINT"
    REPORT_PDF = "REPORT_PDF"
    REPORT_JSON = "REPORT_JSON"
    REPORT_V2_JSON = "REPORT_V2_JSON"
    CORRUPTNESS_CHECK_INFORMATION = "CORRUPTNESS_CHECK_INFORMATION"
    SEQUENCE_INFORMATION = "SEQUENCE_INFORMATION"
    RELEVANT_FILENAMES = "RELEVANT_FILENAMES"


class ArtifactStorageLocation(StrEnum):
    LIGHTLY = "LIGHTLY"
    DATASOURCE = "DATASOURCE"


class LogLevel(StrEnum):
    VERBOSE = "VERBOSE"
    NOTSET = "NOTSET"
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class DatasourcePurpose(StrEnum):
    INPUT = "INPUT"
    LIGHTLY = "LIGHTLY"
    INPUT_OUTPUT = "INPUT_OUTPUT"


class ApiErrorCode(StrEnum):
    """The subset of Lightly's ApiErrorCode values this project answers with."""

    BAD_REQUEST = "BAD_REQUEST"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    DATASET_UNKNOWN = "DATASET_UNKNOWN"
    DATASET_NAME_EXISTS = "DATASET_NAME_EXISTS"
    DATASET_DATASOURCE_UNKNOWN = "DATASET_DATASOURCE_UNKNOWN"
    DATASET_DATASOURCE_INVALID = "DATASET_DATASOURCE_INVALID"
    TAG_UNKNOWN = "TAG_UNKNOWN"
    DOCKER_RUN_UNKNOWN = "DOCKER_RUN_UNKNOWN"
    DOCKER_RUN_ARTIFACT_UNKNOWN = "DOCKER_RUN_ARTIFACT_UNKNOWN"
    DOCKER_RUN_ARTIFACT_UNAVAILABLE = "DOCKER_RUN_ARTIFACT_UNAVAILABLE"
    DOCKER_WORKER_UNKNOWN = "DOCKER_WORKER_UNKNOWN"
    DOCKER_WORKER_CONFIG_UNKNOWN = "DOCKER_WORKER_CONFIG_UNKNOWN"
    DOCKER_WORKER_CONFIG_INVALID = "DOCKER_WORKER_CONFIG_INVALID"
    DOCKER_WORKER_SCHEDULE_UNKNOWN = "DOCKER_WORKER_SCHEDULE_UNKNOWN"
    DOCKER_WORKER_SCHEDULE_UPDATE_FAILED = "DOCKER_WORKER_SCHEDULE_UPDATE_FAILED"
    ILLEGAL_ACTION_RESOURCE_IN_USE = "ILLEGAL_ACTION_RESOURCE_IN_USE"
    #: extension (Lightly has no such code): 503, the database refused or lost its connections; retry
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class S3Region(StrEnum):
    US_EAST_2 = "us-east-2"
    US_EAST_1 = "us-east-1"
    US_WEST_1 = "us-west-1"
    US_WEST_2 = "us-west-2"
    AF_SOUTH_1 = "af-south-1"
    AP_EAST_1 = "ap-east-1"
    AP_SOUTH_2 = "ap-south-2"
    AP_SOUTHEAST_3 = "ap-southeast-3"
    AP_SOUTHEAST_4 = "ap-southeast-4"
    AP_SOUTH_1 = "ap-south-1"
    AP_NORTHEAST_3 = "ap-northeast-3"
    AP_NORTHEAST_2 = "ap-northeast-2"
    AP_SOUTHEAST_1 = "ap-southeast-1"
    AP_SOUTHEAST_2 = "ap-southeast-2"
    AP_NORTHEAST_1 = "ap-northeast-1"
    CA_CENTRAL_1 = "ca-central-1"
    CN_NORTHWEST_1 = "cn-northwest-1"
    EU_CENTRAL_1 = "eu-central-1"
    EU_CENTRAL_2 = "eu-central-2"
    EU_WEST_1 = "eu-west-1"
    EU_WEST_2 = "eu-west-2"
    EU_SOUTH_1 = "eu-south-1"
    EU_SOUTH_2 = "eu-south-2"
    EU_WEST_3 = "eu-west-3"
    EU_NORTH_1 = "eu-north-1"
    ME_SOUTH_1 = "me-south-1"
    ME_CENTRAL_1 = "me-central-1"
    SA_EAST_1 = "sa-east-1"
    US_GOV_EAST_1 = "us-gov-east"
    US_GOV_WEST_1 = "us-gov-west"


class ShardState(StrEnum):
    """Extension (issue 11, ``/v1/ext/``): the state of one shard of a split scheduled run."""

    # (the docstring is published as this schema's description in the OpenAPI document, so it stays as it
    # is: the extension is docs/server.md's "Shards (extension, /v1/ext/)")

    OPEN = "OPEN"
    LEASED = "LEASED"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
