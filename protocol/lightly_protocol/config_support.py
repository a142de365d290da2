"""Which options of a run's config this worker acts on, and which it refuses: one table, used by the
server when a run is scheduled (a 400) and by the worker when a run reaches it some other way or the
local CLI mode is given the key (the same message).

Every field of lightly==1.5.26's ``DockerWorkerConfigV4`` (``docker``, ``lightly``, ``selection``, what
``schedule_compute_worker_run`` sends) has an entry here: ``ACTED_ON`` says what the worker does with
it and which test shows it, ``REFUSED`` says which values are refused, why, and what to use instead.
A key may be in both when only some of its values are refused (``lightly.checkpoint_callback.save_last``
True is acted on, False refused). Keys are dotted snake_case paths; a list's entries add no index
(``selection.strategies.input.task``); an entry for a group (``docker.crops``) covers every key in it.
tests/test_config_support.py walks the client's generated models so that no field is left out, and
checks docs/worker.md's table ("Config options") against this one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .enums import WorkerType
from .models import WorkerConfigV4


def _given(value: Any, parent: Any, config: WorkerConfigV4) -> bool:
    """Any value at all (an empty list counts as not given: the client sends ``autoTasks: []``)."""
    return value is not None and value != []


@dataclass(frozen=True)
class ActedOn:
    key: str
    how: str
    #: ``tests/<file>.py::<test>`` that shows it (the walk test checks the test exists)
    test: str


@dataclass(frozen=True)
class Refused:
    key: str
    why: str
    instead: str
    #: which values are refused (with the field's model and the whole config); default: any value given
    when: Callable[[Any, Any, WorkerConfigV4], bool] = _given
    #: the refused values in words, shown after the key ("> 1"); "" for any value
    values: str = ""
    #: ``when`` reads the rest of the config (not only the value): the worker's ``key=value`` defaults
    #: are checked against it with the run's merged config, not on their own
    context: bool = False

    def message(self, shown_key: str) -> str:
        values = f" {self.values}" if self.values else ""
        return f"{shown_key}{values} is not supported by this worker: {self.why}; {self.instead}"


def _similarity_tag(input_: Any, config: WorkerConfigV4) -> bool:
    """``input_`` (a strategy's input) has a tag_name and its strategy is SIMILARITY."""
    for entry in config.selection.strategies if config.selection else []:
        if entry.input is input_:
            return bool(entry.input.tag_name) and entry.strategy.type == "SIMILARITY"
    return False


def _balance_classes(input_: Any, config: WorkerConfigV4) -> bool:
    """``input_`` (a strategy's input) is PREDICTIONS or METADATA and its strategy BALANCE."""
    for entry in config.selection.strategies if config.selection else []:
        if entry.input is input_:
            return entry.strategy.type == "BALANCE" and entry.input.type in ("PREDICTIONS", "METADATA")
    return False


def _tiling_task(task: str, config: WorkerConfigV4) -> bool:
    """``task`` is the name of one of the config's TILING auto tasks."""
    return bool(config.selection and any(t.name == task for t in config.selection.auto_tasks or []))


def _training_off(config: WorkerConfigV4) -> bool:
    return not (config.docker and config.docker.enable_training)


REFUSED: tuple[Refused, ...] = (
    Refused(
        "docker.datasource.input_expiration",
        "the worker reads each datasource directly, not through expiring read URLs",
        "leave it out",
    ),
    Refused(
        "docker.crops",
        "crops are not uploaded as a crop dataset (object-level selection writes them to the run's artifacts, "
        "crops/<task>/)",
        "leave it out; download the crops with the run's artifacts",
    ),
    Refused(
        "docker.training.task_name",
        "the task's object crops are what docker.enable_training trains the embedding model on; without "
        "training nothing would use them",
        "set docker.enable_training=True, or leave training.task_name out",
        when=lambda v, _p, c: bool(v) and _training_off(c),
        values="without docker.enable_training",
        context=True,
    ),
    Refused(
        "docker.pretagging",
        "pretagging needs a pretrained object detector, and none installs from a package with its weights "
        "and runs beside the worker's torch (measured: ultralytics, yolov5, rfdetr and effdet download their "
        "weights at run time and need torchvision; facenet-pytorch ships MTCNN weights but detects faces "
        "only and needs torchvision too; see docs/worker.md)",
        "leave it out; run your detector and give its detections as a prediction task in "
        ".lightly/predictions/ (SCORES, PREDICTIONS, or EMBEDDINGS with its 'task' for object-level selection)",
    ),
    Refused(
        "docker.pretagging_upload",
        "pretagging is not implemented (no pretrained detector installs with its weights; see docker.pretagging)",
        "leave it out",
    ),
    Refused(
        "docker.upload_report",
        "the report is always uploaded with the run's artifacts",
        "leave it out (or True)",
        when=lambda v, _p, _c: v is False,
        values="False",
    ),
    Refused(
        "docker.cache_size",
        "the worker keeps no disk cache (it reads the datasources directly)",
        "leave it out (or <= 0: no cache)",
        when=lambda v, _p, _c: v is not None and v > 0,
        values="> 0",
    ),
    Refused(
        "lightly.checkpoint_callback.save_last",
        "the last checkpoint of a training run is always kept (lightly_epoch_last.ckpt, the CHECKPOINT artifact)",
        "leave it out (or True)",
        when=lambda v, _p, _c: v is False,
        values="False",
    ),
    Refused(
        "lightly.model",
        "without docker.enable_training the worker embeds with its own pretrained model (the worker option "
        "embedding.model, efficientnet-lite0 by default); lightly.model configures the model that "
        "enable_training trains",
        "set docker.enable_training=True, or leave lightly.model out",
        when=lambda v, _p, c: v is not None and _training_off(c),
        values="without docker.enable_training",
        context=True,
    ),
    Refused(
        "lightly.trainer.gpus",
        "a worker trains on one device, chosen by its device option (auto: the GPU when one is visible)",
        "leave it out (or 1), start the worker with device=cpu to train on the CPU, and use more workers "
        "with docker.parallelism for more GPUs",
        when=lambda v, _p, _c: v is not None and v != 1,
        values="other than 1",
    ),
    Refused(
        "selection.strategies.input.task",
        "a TILING auto task has no categories or scores: its tiles are selected on their embeddings only",
        "name the tiling task on an EMBEDDINGS input only",
        when=lambda v, p, c: bool(v) and p.type in ("SCORES", "PREDICTIONS") and _tiling_task(v, c),
        values="naming a TILING auto task on SCORES or PREDICTIONS",
        context=True,
    ),
    Refused(
        "selection.strategies.input.task",
        "a task belongs to SCORES and PREDICTIONS inputs, and to EMBEDDINGS for object-level selection",
        "leave 'task' out of this input",
        when=lambda v, p, _c: bool(v) and p.type not in ("SCORES", "PREDICTIONS", "EMBEDDINGS"),
        values="on an input other than SCORES, PREDICTIONS or EMBEDDINGS",
        context=True,
    ),
    Refused(
        "selection.strategies.input.dataset_id",
        "only a SIMILARITY query tag is read from another dataset; every other input is the run's own",
        "leave it out, or use it with strategy SIMILARITY and tag_name",
        when=lambda v, p, c: bool(v) and not _similarity_tag(p, c),
        values="outside SIMILARITY with a tag_name",
        context=True,
    ),
    Refused(
        "selection.strategies.input.categories",
        "only BALANCE's classes (PREDICTIONS or categorical METADATA) can be restricted to some categories",
        "leave it out, or use it on the input of a BALANCE strategy",
        when=lambda v, p, c: bool(v) and not _balance_classes(p, c),
        values="outside BALANCE on PREDICTIONS or METADATA",
        context=True,
    ),
)

_T = "tests/test_embed.py::test_train_config_from_lightly_config"  # every lightly.* training key
_TRAIN = "trains the SimCLR model with it (docker.enable_training); like Lightly, no effect without training"

ACTED_ON: tuple[ActedOn, ...] = (
    ActedOn(
        "worker_type",
        "FULL, the only type",
        "tests/test_protocol_models.py::test_what_the_real_client_sends_is_accepted",
    ),
    ActedOn(
        "docker.corruptness_check.corruption_threshold",
        "a video is corrupt when a larger share of its frames cannot be decoded",
        "tests/test_embed.py::test_video_frames",
    ),
    ActedOn(
        "docker.datasource.bypass_verify",
        "the worker never checks permissions before a run (what True asks); a datasource it cannot read or "
        "write fails the run when it is read or written, naming the file",
        "tests/test_config_support.py::test_each_field_set_through_the_unmodified_client_is_acted_on_or_refused_by_name",
    ),
    ActedOn(
        "docker.datasource.enable_datapool_update",
        "False: the datapool (and processedUntilTimestamp) is read but not updated",
        "tests/test_config_support.py::test_datapool_options_in_a_local_run",
    ),
    ActedOn(
        "docker.datasource.process_all",
        "every file is processed again: the datapool's and those processed by earlier runs",
        "tests/test_config_support.py::test_datapool_options_in_a_local_run",
    ),
    ActedOn(
        "docker.embeddings",
        "custom embeddings CSV in .lightly/embeddings/",
        "tests/test_shard_work.py::test_split_run_with_custom_embeddings",
    ),
    ActedOn(
        "docker.enable_training",
        "SimCLR training before embedding",
        "tests/test_parallel_runs.py::test_a_training_run_is_not_split_and_says_so",
    ),
    ActedOn(
        "docker.training.task_name",
        "with docker.enable_training: SimCLR trains on the padded crops of that prediction task's objects "
        "(object-detection, keypoint-detection, instance-segmentation, or a TILING auto task) instead of the "
        "whole images; empty: the whole images",
        "tests/test_crop_training.py::test_a_run_scheduled_with_the_client_trains_on_the_crops_of_the_task",
    ),
    ActedOn(
        "docker.normalize_embeddings",
        "L2-normalised embeddings (default True)",
        "tests/test_worker_cli.py::test_local_mode_with_a_config_file_and_its_errors",
    ),
    ActedOn(
        "docker.num_processes",
        "the data loader's worker processes (embedding and training) where lightly.loader.num_workers is not "
        "set; -1: one per vCPU",
        "tests/test_config_support.py::test_num_processes_and_num_threads_reach_the_loader_and_torch",
    ),
    ActedOn(
        "docker.num_threads",
        "torch.set_num_threads for the run, training and embedding included (-1: one per vCPU)",
        "tests/test_worker_cli.py::test_num_threads_and_num_processes_are_what_training_and_embedding_run_with",
    ),
    ActedOn(
        "docker.relevant_filenames_file",
        "only the files listed there (under .lightly/)",
        "tests/test_worker_paths.py::test_relevant_filenames_file_stays_in_dot_lightly",
    ),
    ActedOn(
        "docker.selected_sequence_length",
        "> 1: whole sequences of that many consecutive video frames are selected (data/sequence_information.json); "
        "per-frame inputs are aggregated per sequence (mean; BALANCE: summed class counts)",
        "tests/test_sequences.py::test_a_sequence_run_selects_on_its_frames_aggregated_values",
    ),
    ActedOn(
        "docker.upload_report",
        "True: the report is uploaded with the run's artifacts",
        "tests/test_worker_flow.py::test_worker_claims_runs_reports_and_finishes",
    ),
    ActedOn(
        "docker.use_datapool",
        "selected files are kept in .lightly/datapool/ and count in later runs, which process only files "
        "modified since the last (processedUntilTimestamp)",
        "tests/test_config_support.py::test_datapool_options_in_a_local_run",
    ),
    ActedOn(
        "docker.shutdown_when_job_finished",
        "the worker exits after the run",
        "tests/test_worker_ownership.py::test_startup_hands_back_runs_an_earlier_process_held",
    ),
    ActedOn(
        "docker.cache_size",
        "<= 0: no disk cache, which the worker never keeps",
        "tests/test_config_support.py::test_each_field_set_through_the_unmodified_client_is_acted_on_or_refused_by_name",
    ),
    ActedOn(
        "docker.parallelism",
        "extension: split the run over workers",
        "tests/test_parallel_runs.py::test_parallelism_3_selects_exactly_what_one_worker_selects",
    ),
    ActedOn(
        "docker.shard_size",
        "extension: files per shard of a split run",
        "tests/test_parallel_runs.py::test_parallelism_3_selects_exactly_what_one_worker_selects",
    ),
    ActedOn(
        "docker.checkpoint",
        "a checkpoint in .lightly/checkpoints/ (a run's lightly_epoch_last.ckpt, in Lightly's layout, or a Lightly "
        "worker's): the run embeds with its model, or trains it further with enable_training",
        "tests/test_checkpoints.py::test_the_worker_still_reads_its_older_checkpoints_and_reads_lightlys",
    ),
    ActedOn(
        "docker.checkpoint_run_id",
        "the CHECKPOINT artifact of that earlier run (fetched through the API): embedded with, or trained further",
        "tests/test_worker_e2e.py::test_checkpoint_run_id_reuses_an_earlier_runs_model",
    ),
    ActedOn("lightly.seed", "seeds training and the embedder", _T),
    ActedOn("lightly.checkpoint_callback.save_last", "True: the last checkpoint is kept", _T),
    ActedOn("lightly.loader.batch_size", "batch size of embedding and training", _T),
    ActedOn("lightly.loader.num_workers", "data loader processes of embedding and training", _T),
    ActedOn("lightly.loader.shuffle", _TRAIN, _T),
    ActedOn("lightly.loader.drop_last", _TRAIN, _T),
    ActedOn("lightly.model", "the trained model (with docker.enable_training)", _T),
    ActedOn("lightly.trainer.gpus", "1: the worker's one device", _T),
    ActedOn("lightly.trainer.max_epochs", _TRAIN, _T),
    ActedOn("lightly.trainer.precision", _TRAIN, _T),
    ActedOn("lightly.criterion", _TRAIN, _T),
    ActedOn("lightly.optimizer", _TRAIN, _T),
    ActedOn("lightly.collate", _TRAIN + "; input_size also sizes the embedder's input", _T),
    ActedOn(
        "selection.auto_tasks",
        "TILING: each image's grid of num_rows x num_cols tiles (overlap a fraction of the tile size) becomes "
        "the objects of the task 'name', selected by an EMBEDDINGS input with that task",
        "tests/test_tiling.py::test_a_tiling_run_scheduled_with_the_lightly_client",
    ),
    ActedOn("selection.n_samples", "how many to select", "tests/test_selection.py::test_n_samples_and_proportion"),
    ActedOn(
        "selection.proportion_samples",
        "which share to select",
        "tests/test_selection.py::test_n_samples_and_proportion",
    ),
    ActedOn(
        "selection.lightly_path_regex",
        "only input files whose path matches",
        "tests/test_config_support.py::test_datapool_options_in_a_local_run",
    ),
    ActedOn("selection.strategies.input.type", "the input", "tests/test_selection.py::test_errors_say_what_to_fix"),
    ActedOn(
        "selection.strategies.input.task",
        "the prediction task of SCORES and PREDICTIONS",
        "tests/test_selection.py::test_predictions_reader_and_scores",
    ),
    ActedOn(
        "selection.strategies.input.task",
        "on EMBEDDINGS: object-level selection on the crops of that task's objects",
        "tests/test_crops.py::test_object_level_run_scheduled_with_the_lightly_client",
    ),
    ActedOn(
        "docker.output_image_format",
        "the image format of the crop files of object-level selection (png, jpg)",
        "tests/test_crops.py::test_object_level_run_scheduled_with_the_lightly_client",
    ),
    ActedOn(
        "selection.strategies.input.score",
        "the score of SCORES",
        "tests/test_selection.py::test_predictions_reader_and_scores",
    ),
    ActedOn("selection.strategies.input.key", "the key of METADATA", "tests/test_selection.py::test_metadata_reader"),
    ActedOn(
        "selection.strategies.input.name",
        "CLASS_DISTRIBUTION or CATEGORY_COUNT of PREDICTIONS",
        "tests/test_selection.py::test_balance_predictions_class_distribution",
    ),
    ActedOn(
        "selection.strategies.input.dataset_id",
        "SIMILARITY with tag_name: the query is that dataset's tag, with the embeddings its runs stored",
        "tests/test_worker_e2e.py::test_similarity_to_another_datasets_tag",
    ),
    ActedOn(
        "selection.strategies.input.categories",
        "BALANCE counts only these classes (PREDICTIONS or categorical METADATA), in this order",
        "tests/test_selection.py::test_balance_on_some_categories_only",
    ),
    ActedOn(
        "selection.strategies.input.tag_name",
        "SIMILARITY's query tag (.lightly/tags/<tag_name>.txt)",
        "tests/test_selection.py::test_similarity_and_typicality",
    ),
    ActedOn(
        "selection.strategies.input.random_seed",
        "RANDOM's seed",
        "tests/test_selection.py::test_random_weights_seeded",
    ),
    ActedOn(
        "selection.strategies.strategy",
        "the strategy and its parameters",
        "tests/test_selection.py::test_similarity_and_typicality",
    ),
)

#: the strategy keys with a test of their own (the group entry above covers the rest)
STRATEGY_TESTS = {
    "stopping_condition_minimum_distance": "tests/test_selection.py::test_select_minimum_distance_stop_and_datapool",
    "stopping_condition_max_sum": "tests/test_selection.py::test_weights_order_and_max_sum",
    "num_nearest_neighbors": "tests/test_selection.py::test_similarity_and_typicality",
    "distribution": "tests/test_selection.py::test_balance_uniform_and_input",
    "coverage_radius_ext": "tests/test_coverage.py::test_coverage_ext_config_problems",
}


def _covering(key: str, entries: tuple[Any, ...]) -> list[Any]:
    return [e for e in entries if key == e.key or key.startswith(e.key + ".")]


def acted_on(key: str) -> list[ActedOn]:
    """The ``ACTED_ON`` entries for ``key`` (its own or its group's)."""
    return _covering(key, ACTED_ON)


def refused(key: str) -> list[Refused]:
    """The ``REFUSED`` entries for ``key`` (its own or its group's)."""
    return _covering(key, REFUSED)


def _fields(model: BaseModel, key: str, shown: str) -> Iterator[tuple[str, str, Any, BaseModel]]:
    """(key, the key as shown with list indices, value, the model holding it) of every field given."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if value is None:
            continue
        k, s = f"{key}{name}", f"{shown}{name}"
        yield k, s, value, model
        if isinstance(value, BaseModel):
            yield from _fields(value, f"{k}.", f"{s}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _fields(item, f"{k}.", f"{s}[{i}].")


def refusals(config: WorkerConfigV4) -> list[str]:
    """One sentence per option of ``config`` that this worker does not support (``REFUSED``)."""
    out: list[str] = []
    for key, shown, value, parent in _fields(config, "", ""):
        for rule in REFUSED:
            if rule.key == key and rule.when(value, parent, config):
                out.append(rule.message(shown))
    return out


def cli_refusal(key: str, value: Any) -> str | None:
    """Why the worker's ``key=value`` option (a worker-config or ``lightly.*`` default) is refused, or None.

    Refusals that depend on the rest of the run's config (``lightly.model`` without training) are left to
    the run, which checks its merged config with ``refusals``.
    """
    for rule in REFUSED:
        if not rule.context and (key == rule.key or key.startswith(rule.key + ".")):
            covered = value if key == rule.key else {key: value}
            if rule.when(covered, None, _EMPTY):
                return rule.message(key)
    return None


_EMPTY = WorkerConfigV4(worker_type=WorkerType.FULL)
