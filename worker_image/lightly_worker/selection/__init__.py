"""Selection engine of the worker: Lightly's ``SelectionConfigV4`` semantics on local arrays.

``select(config, inputs, device)`` runs THRESHOLD filters and the greedy multi-strategy selection
(see :mod:`.engine` for the semantics); ``load_lightly_inputs`` reads METADATA / PREDICTIONS /
SCORES inputs from a Lightly datasource's ``.lightly/`` folder (see :mod:`.lightly_io`);
:mod:`.kcenter` holds the exact greedy k-center kernels (numba on CPU, torch on CUDA);
:mod:`.predictions` reads prediction tasks of every Lightly task type and :mod:`.scores` holds
their active-learning scorers; :mod:`.objects` turns a task's objects into the candidates of an
object-level selection; :mod:`.coverage` the COVERAGE_EXT extension (ProbCover) on the kNN graphs of :mod:`.neighbours`;
``strategy_warning`` (:mod:`.advice`) the log warning for DIVERSITY alone at small budgets.
"""

from .advice import strategy_warning
from .engine import EPS, select, selection_limit
from .kcenter import HAVE_NUMBA, KCenterResult, kcenter_greedy
from .lightly_io import LightlyInputParts, classification_scores, load_lightly_inputs, load_metadata, load_predictions
from .objects import ObjectRef, list_objects, object_inputs, object_level_task
from .scores import SCORERS, TASK_TYPES, ObjectPrediction
from .types import PredictionTask, SelectionError, SelectionInputs, SelectionResult

__all__ = [
    "EPS",
    "HAVE_NUMBA",
    "SCORERS",
    "TASK_TYPES",
    "KCenterResult",
    "LightlyInputParts",
    "ObjectPrediction",
    "ObjectRef",
    "PredictionTask",
    "SelectionError",
    "SelectionInputs",
    "SelectionResult",
    "classification_scores",
    "kcenter_greedy",
    "list_objects",
    "load_lightly_inputs",
    "load_metadata",
    "load_predictions",
    "object_inputs",
    "object_level_task",
    "select",
    "selection_limit",
    "strategy_warning",
]
