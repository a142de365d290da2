"""No option is accepted and ignored: every field of lightly==1.5.26's worker config models (the ones
``schedule_compute_worker_run`` sends: ``DockerWorkerConfigV4Docker``, ``DockerWorkerConfigV3Lightly``,
``SelectionConfigV4``, walked recursively through nested models, lists and oneOf wrappers) is either
acted on by the worker (``config_support.ACTED_ON``, with the test that shows it) or refused at
scheduling with a 400 that names it (``config_support.REFUSED``). Each field is set to a valid non-default
value and scheduled through the unmodified client against the real server. docs/worker.md's table
"Config options" is checked against the same table.
"""

from __future__ import annotations

import os
import re
import secrets
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from lightly_protocol import config_support
from lightly_protocol.config_support import ACTED_ON, REFUSED, acted_on, refused

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "worker.md"

#: the client's models, by the config section they fill
SECTIONS = {
    "docker": "DockerWorkerConfigV4Docker",
    "lightly": "DockerWorkerConfigV3Lightly",
    "selection": "SelectionConfigV4",
}

BASE_SELECTION: dict[str, Any] = {
    "n_samples": 2,
    "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
}

#: a selection entry that sets each key of an entry (a valid combination for it)
ENTRY_CASES: dict[str, dict[str, Any]] = {
    "input.type": {"input": {"type": "RANDOM"}, "strategy": {"type": "WEIGHTS"}},
    "input.task": {"input": {"type": "SCORES", "task": "det", "score": "uncertainty"}, "strategy": {"type": "WEIGHTS"}},
    "input.score": {"input": {"type": "SCORES", "task": "det", "score": "entropy"}, "strategy": {"type": "WEIGHTS"}},
    "input.key": {"input": {"type": "METADATA", "key": "lightly.sharpness"}, "strategy": {"type": "WEIGHTS"}},
    "input.name": {
        "input": {"type": "PREDICTIONS", "task": "det", "name": "CATEGORY_COUNT"},
        "strategy": {"type": "BALANCE", "distribution": "UNIFORM"},
    },
    "input.dataset_id": {
        "input": {"type": "EMBEDDINGS", "dataset_id": "0123456789abcdef01234567", "tag_name": "query"},
        "strategy": {"type": "SIMILARITY"},
    },
    "input.tag_name": {"input": {"type": "EMBEDDINGS", "tag_name": "query"}, "strategy": {"type": "SIMILARITY"}},
    "input.random_seed": {"input": {"type": "RANDOM", "random_seed": 7}, "strategy": {"type": "WEIGHTS"}},
    "input.categories": {
        "input": {"type": "PREDICTIONS", "task": "det", "name": "CLASS_DISTRIBUTION", "categories": ["car"]},
        "strategy": {"type": "BALANCE", "distribution": "UNIFORM"},
    },
    "strategy.type": {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "TYPICALITY"}},
    "strategy.stopping_condition_minimum_distance": {
        "input": {"type": "EMBEDDINGS"},
        "strategy": {"type": "DIVERSITY", "stopping_condition_minimum_distance": 0.2},
    },
    "strategy.threshold": {
        "input": {"type": "METADATA", "key": "lightly.sharpness"},
        "strategy": {"type": "THRESHOLD", "threshold": 0.5, "operation": "BIGGER"},
    },
    "strategy.operation": {
        "input": {"type": "METADATA", "key": "lightly.sharpness"},
        "strategy": {"type": "THRESHOLD", "threshold": 0.5, "operation": "SMALLER_EQUAL"},
    },
    "strategy.target": {
        "input": {"type": "PREDICTIONS", "task": "det", "name": "CLASS_DISTRIBUTION"},
        "strategy": {"type": "BALANCE", "target": {"car": 0.5}},
    },
    "strategy.num_nearest_neighbors": {
        "input": {"type": "EMBEDDINGS"},
        "strategy": {"type": "TYPICALITY", "num_nearest_neighbors": 10},
    },
    "strategy.stopping_condition_minimum_typicality": {
        "input": {"type": "EMBEDDINGS"},
        "strategy": {"type": "TYPICALITY", "stopping_condition_minimum_typicality": 0.5},
    },
    "strategy.strength": {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY", "strength": 2.0}},
    "strategy.stopping_condition_max_sum": {
        "input": {"type": "METADATA", "key": "lightly.sharpness"},
        "strategy": {"type": "WEIGHTS", "stopping_condition_max_sum": 10.0},
    },
    "strategy.target_range": {
        "input": {"type": "PREDICTIONS", "task": "det", "name": "CATEGORY_COUNT"},
        "strategy": {"type": "BALANCE", "target": {"car": 0.5}, "target_range": {"min_sum": 1, "max_sum": 5}},
    },
    "strategy.distribution": {
        "input": {"type": "PREDICTIONS", "task": "det", "name": "CLASS_DISTRIBUTION"},
        "strategy": {"type": "BALANCE", "distribution": "INPUT"},
    },
}

#: fields the client's model requires beside the one set, by the group they are in
SIBLINGS: dict[str, dict[str, Any]] = {
    "docker.datasource.input_expiration": {"min_days_to_expiration": 1, "handling_strategy": "SKIP"},
}

#: keys whose values are partly acted on, partly refused: (value, refused?) each, scheduled one by one
PARTIAL: dict[str, list[tuple[Any, bool]]] = {
    "docker.selected_sequence_length": [(1, False), (3, False)],
    "docker.upload_report": [(True, False), (False, True)],
    "docker.cache_size": [(0, False), (-1, False), (1_000_000, True)],
    "lightly.checkpoint_callback.save_last": [(True, False), (False, True)],
    "lightly.trainer.gpus": [(1, False), (0, True), (2, True)],
}


def _model(name: str) -> Any:
    import lightly.openapi_generated.swagger_client.models as models

    return getattr(models, name)


def _members(tp: Any) -> list[Any]:
    args = typing.get_args(tp)
    return [m for a in args for m in _members(a)] if args else [tp]


def _nested(field: Any) -> list[Any]:
    """The client models a field holds (itself, in a list, or a oneOf wrapper's choices)."""
    from pydantic.v1 import BaseModel

    out = []
    for tp in _members(field.outer_type_) + _members(field.type_):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            schemas = getattr(tp, "__fields__", {}).get("one_of_schemas")
            if schemas is not None:  # a oneOf wrapper (AutoTask): walk each choice
                out += [_model(n) for n in schemas.default]
            elif tp not in out:
                out.append(tp)
    return out


def client_fields(model: Any = None, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of the client's config models, by dotted snake_case key (list entries unindexed)."""
    if model is None:
        out: dict[str, Any] = {}
        for section, name in SECTIONS.items():
            out.update(client_fields(_model(name), f"{section}."))
        return out
    out = {}
    for name, field in model.__fields__.items():
        if name in ("actual_instance", "one_of_schemas") or name.startswith("oneof_schema"):
            continue
        nested = _nested(field)
        if nested:
            for sub in nested:
                out.update(client_fields(sub, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field
    return out


def test_the_walk_finds_the_models_fields() -> None:
    """The walk reaches nested models, list entries and oneOf choices (a walk that found nothing could pass)."""
    keys = client_fields()
    for key in (
        "docker.datasource.input_expiration.handling_strategy",
        "docker.crops.enable_upload_for_tasks",
        "lightly.collate.rr_degrees",
        "selection.strategies.input.categories",
        "selection.strategies.strategy.target_range.max_sum",
        "selection.auto_tasks.num_rows",
        "selection.auto_tasks.bboxs",
    ):
        assert key in keys, key
    assert len(keys) > 80


def test_every_field_of_the_client_is_acted_on_or_refused() -> None:
    missing = [k for k in client_fields() if not acted_on(k) and not refused(k)]
    assert missing == [], f"add these to lightly_protocol.config_support (ACTED_ON or REFUSED): {missing}"


def test_every_field_of_our_model_is_acted_on_or_refused() -> None:
    """The protocol's own model too (its extensions: parallelism, shard_size, coverage_radius_ext)."""
    from lightly_protocol.models import WorkerConfigV4
    from pydantic import BaseModel

    def keys(model: type[BaseModel], prefix: str) -> list[str]:
        out = []
        for name, info in model.model_fields.items():
            subs = [m for m in _members(info.annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
            out += [k for s in subs for k in keys(s, f"{prefix}{name}.")] if subs else [f"{prefix}{name}"]
        return out

    missing = [k for k in keys(WorkerConfigV4, "") if not acted_on(k) and not refused(k)]
    assert missing == []


def test_each_acted_on_entry_names_a_test_that_exists() -> None:
    for entry in [*ACTED_ON, *(ACTED_ON[0].__class__("", "", t) for t in config_support.STRATEGY_TESTS.values())]:
        path, _, name = entry.test.partition("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{entry.key}: {entry.test} does not exist"


def _value(key: str, field: Any) -> Any:
    """A valid value of the client's field, not its default."""
    tp = field.outer_type_
    members = [m for m in _members(tp) if m is not type(None)]
    kind = members[0]
    if isinstance(kind, type) and issubclass(kind, Enum):
        values = [m.value for m in kind]
        return values[-1] if field.default != values[-1] else values[0]
    low = getattr(kind, "ge", None) or getattr(kind, "gt", None) or 0
    if isinstance(kind, type) and (issubclass(kind, bool) or kind.__name__ == "StrictBool"):
        return field.default is not True
    if isinstance(kind, type) and issubclass(kind, int):
        return max(int(low) + 1, 1)
    if isinstance(kind, type) and issubclass(kind, float):
        return 0.5
    if isinstance(kind, type) and issubclass(kind, str):
        if "run_id" in key:
            return "0123456789abcdef01234567"
        if key == "docker.relevant_filenames_file":
            return ".lightly/relevant_filenames.txt"
        return "lightly_path" if "regex" not in key else "^train/"
    if isinstance(kind, type) and issubclass(kind, list):
        return {"lightly.collate.sigmas": [0.5, 2.0], "lightly.collate.rr_degrees": [-10.0, 10.0]}.get(key, ["det"])
    raise AssertionError(f"no value for {key} ({tp!r})")


def _config(key: str, value: Any) -> dict[str, Any]:
    """schedule_compute_worker_run's arguments with ``key`` set to ``value`` (a base selection besides)."""
    section, _, rest = key.partition(".")
    worker: dict[str, Any] = {}
    lightly: dict[str, Any] = {}
    selection: dict[str, Any] = {**BASE_SELECTION}
    if section == "lightly" and rest.startswith("model"):
        worker["enable_training"] = True  # lightly.model without training: refused (its own case below)
    if key == "docker.training.task_name":
        worker["enable_training"] = True  # training.task_name without training: refused (its own case below)
    if section == "selection" and rest.startswith("strategies."):
        entry = rest[len("strategies.") :]
        case = max((c for c in ENTRY_CASES if entry == c or entry.startswith(c + ".")), key=len)
        selection["strategies"] = [ENTRY_CASES[case]]
    elif section == "selection" and rest.startswith("auto_tasks"):
        selection["auto_tasks"] = [{"type": "TILING", "name": "tiles", "num_rows": 2, "num_cols": 2}]
    else:
        node = {"docker": worker, "lightly": lightly, "selection": selection}[section]
        parts = rest.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node.update(SIBLINGS.get(key.rpartition(".")[0], {}))
        node[parts[-1]] = value
    return {"worker_config": worker or None, "lightly_config": lightly or None, "selection_config": selection}


def _schedule(client: Any, config: dict[str, Any]) -> str | None:
    """None when scheduled, else the 400's message."""
    from lightly.openapi_generated.swagger_client.rest import ApiException

    try:
        client.schedule_compute_worker_run(**config)
    except ApiException as exc:
        assert exc.status == 400, exc
        return str(exc.body)
    except Exception as exc:  # the client's PrettyPrintApiException wraps it
        cause = getattr(exc, "api_exception", None) or exc
        assert "400" in str(cause), cause
        return str(cause)
    return None


def _cases() -> list[tuple[str, Any, bool]]:
    out: list[tuple[str, Any, bool]] = []
    for key, field in client_fields().items():
        if key in PARTIAL:
            out += [(key, v, r) for v, r in PARTIAL[key]]
        elif key.startswith(("selection.strategies.", "selection.auto_tasks.")):
            out.append((key, "(case)", _refused_as_set(key)))  # set by ENTRY_CASES / one TILING task
        else:
            out.append((key, _value(key, field), _refused_as_set(key)))
    # the refusals that depend on the rest of the config, in the config that meets them
    out.append(("lightly.model.name", "without-training", True))
    out.append(("docker.training.task_name", "crops-without-training", True))
    out.append(("selection.strategies.input.task", "on-random", True))
    out.append(("selection.strategies.input.dataset_id", "outside-similarity", True))
    out.append(("selection.strategies.input.categories", "outside-balance", True))
    out.append(("selection.strategies.input.task", "tiling-on-scores", True))
    return out


def _refused_as_set(key: str) -> bool:
    """Whether the table refuses ``key`` in the config ``_config`` builds (a rule that reads the rest of
    the config does not apply there: lightly.model comes with enable_training, a task with SCORES)."""
    return any(not rule.context for rule in refused(key))


def test_each_field_set_through_the_unmodified_client_is_acted_on_or_refused_by_name(client) -> None:
    client.create_dataset(f"ds-{secrets.token_hex(4)}")
    client.set_local_config(relative_path="images", purpose="INPUT")
    fields = client_fields()
    seen_refused: set[str] = set()
    for key, value, expect_refused in _cases():
        if value == "without-training":
            config = _config(key, "resnet-50")
            config["worker_config"] = None
        elif value == "crops-without-training":
            config = _config(key, "det")
            config["worker_config"] = {"training": {"task_name": "det"}}
        elif value == "on-random":
            config = _config(key, None)
            config["selection_config"]["strategies"] = [
                {"input": {"type": "RANDOM", "task": "det"}, "strategy": {"type": "WEIGHTS"}}
            ]
        elif value == "tiling-on-scores":
            config = _config(key, None)
            config["selection_config"]["strategies"] = [
                {"input": {"type": "SCORES", "task": "tiles", "score": "x"}, "strategy": {"type": "WEIGHTS"}}
            ]
            config["selection_config"]["auto_tasks"] = [
                {"type": "TILING", "name": "tiles", "num_rows": 2, "num_cols": 2}
            ]
        elif value == "outside-balance":
            config = _config(key, None)
            config["selection_config"]["strategies"] = [
                {"input": {"type": "EMBEDDINGS", "categories": ["car"]}, "strategy": {"type": "DIVERSITY"}}
            ]
        elif value == "outside-similarity":
            config = _config(key, None)
            config["selection_config"]["strategies"] = [
                {
                    "input": {"type": "EMBEDDINGS", "dataset_id": "0123456789abcdef01234567"},
                    "strategy": {"type": "DIVERSITY"},
                }
            ]
        else:
            config = _config(key, value)
        error = _schedule(client, config)
        shown = f"{key} = {value!r}"
        if expect_refused:
            assert error is not None, f"{shown} was accepted but the table refuses it"
            group = refused(key)[0].key
            unindexed = re.sub(r"\[\d+\]", "", error)  # selection.strategies[0].input.x names ...input.x
            assert group in unindexed or key in unindexed, f"{shown}: the 400 does not name it: {error}"
            assert "not supported by this worker" in error and ";" in error, error
            seen_refused.add(group)
        else:
            assert error is None, f"{shown} was refused: {error}"
            assert acted_on(key), f"{shown} is accepted but not in ACTED_ON"
    # every refusal rule of the table was met by a field of the client
    assert {r.key for r in REFUSED} <= seen_refused | {k for k in fields if k in seen_refused}


def test_the_worker_refuses_the_same_options_with_the_same_message(client) -> None:
    """A run that reaches the worker another way (disableConfigValidation is refused too; here: the
    worker's own check of a run's config), and the local CLI's key=value defaults."""
    from lightly_protocol.models import WorkerConfigV4
    from lightly_protocol.validation import config_problems
    from lightly_worker.config import ConfigError, parse_args

    config = WorkerConfigV4.model_validate(
        {"workerType": "FULL", "docker": {"pretagging": True}, "selection": {"nSamples": 2, **_strategies()}}
    )
    problems = config_problems(config)
    assert problems[0].startswith("docker.pretagging is not supported by this worker: ")
    with pytest.raises(ConfigError) as info:
        parse_args(["pretagging=True"], {})
    assert str(info.value) == problems[0]
    for arg, key in (
        ("docker.crops.enable_upload=False", "docker.crops.enable_upload"),
        ("lightly.trainer.gpus=4", "lightly.trainer.gpus"),
        ("datasource.input_expiration.handling_strategy=SKIP", "docker.datasource.input_expiration"),
    ):
        with pytest.raises(ConfigError, match=re.escape(key)):
            parse_args([arg], {})
    assert parse_args(["selected_sequence_length=2", "cache_size=0"], {}).extra["cache_size"] == 0


def _strategies() -> dict[str, Any]:
    return {"strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}


def test_docs_table_says_which_is_which() -> None:
    """docs/worker.md "Config options": one row per entry of the table, acted on or refused."""
    section = DOC.read_text().split("## Config options", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented: dict[str, set[str]] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        documented.setdefault(cells[0].strip("`"), set()).add(cells[1])
    expected: dict[str, set[str]] = {}
    for a in ACTED_ON:
        expected.setdefault(a.key, set()).add("acted on")
    for r in REFUSED:
        expected.setdefault(r.key, set()).add("refused" + (f" ({r.values})" if r.values else ""))
    assert documented == expected


def test_num_processes_and_num_threads_reach_the_loader_and_torch() -> None:
    import torch
    from lightly_protocol.models import WorkerConfigV4
    from lightly_worker.run_options import prepare_run

    def config(docker: dict[str, Any], lightly: dict[str, Any] | None = None) -> WorkerConfigV4:
        return WorkerConfigV4.model_validate(
            {
                "workerType": "FULL",
                "docker": docker,
                "lightly": lightly or {},
                "selection": {"nSamples": 2, **_strategies()},
            }
        )

    before = torch.get_num_threads()
    try:
        run = prepare_run(config({"numProcesses": 3, "numThreads": 1}))
        assert run.lightly is not None and run.lightly.loader is not None and run.lightly.loader.num_workers == 3
        assert torch.get_num_threads() == 1
        # the loader's own key is the more specific one
        run = prepare_run(config({"numProcesses": 3}, {"loader": {"numWorkers": 0}}))
        assert run.lightly is not None and run.lightly.loader is not None and run.lightly.loader.num_workers == 0
        assert torch.get_num_threads() == before  # a run without num_threads: the process's own count
        prepare_run(config({"numThreads": -1}))
        assert torch.get_num_threads() == (os.cpu_count() or 1)
        assert prepare_run(config({})).lightly == config({}).lightly
    finally:
        torch.set_num_threads(before)


def test_datapool_options_in_a_local_run(tmp_path: Path) -> None:
    """use_datapool, datasource.enable_datapool_update and datasource.process_all, and
    selection.lightly_path_regex, in three local runs on one folder."""
    import json

    from test_worker_cli import run
    from test_worker_e2e import make_images

    make_images(tmp_path / "images", 12)  # a/: 6 images and a corrupt one; b/: 6 and a duplicate
    (tmp_path / "lightly").mkdir()
    pool = tmp_path / "lightly" / ".lightly" / "datapool" / "datapool_latest.csv"

    def local(name: str, docker: dict[str, Any]) -> dict[str, Any]:
        cfg = tmp_path / f"{name}.json"
        selection = {"n_samples": 2, "lightly_path_regex": "^a/", **_strategies()}
        cfg.write_text(json.dumps({"worker_config": {"use_datapool": True, **docker}, "selection_config": selection}))
        out = tmp_path / name
        r = run(
            "mode=local",
            f"config={cfg}",
            f"input_mount={tmp_path / 'images'}",
            f"lightly_mount={tmp_path / 'lightly'}",
            f"output_dir={out}",
            "embedding.input_size=64",
            "device=cpu",
        )
        assert r.returncode == 0, r.stderr
        summary = json.loads((out / "report.json").read_text())["summary"]
        summary["selected"] = (out / "filenames" / "selected_filenames.txt").read_text().split()
        return dict(summary)

    first = local("first", {})
    assert first["n_candidates"] == 6 and all(n.startswith("a/") for n in first["selected"])  # the regex
    pooled = pool.read_text()
    assert all(n in pooled for n in first["selected"])

    second = local("second", {"datasource": {"enable_datapool_update": False}})
    assert second["n_datapool"] == 2 and second["n_candidates"] == 4  # the pool's files are not candidates
    assert not set(second["selected"]) & set(first["selected"])
    assert pool.read_text() == pooled  # not updated

    third = local("third", {"datasource": {"process_all": True, "enable_datapool_update": False}})
    assert third["n_candidates"] == 6  # the pool's files are processed again
