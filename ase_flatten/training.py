"""Train a model on N frames of a dataset and save it: ``ase-flatten train`` in Python.

::

    from ase_flatten.training import train_model

    model = train_model("traj.xyz", "models/default", backend="sgdml", size=200)
    model.path, model.overall_force_rmse, model.test_indices

A test split (``test_fraction``, seeded by ``split_seed``: the same for every
strategy and for a selection run) is held out; ``size`` frames are chosen from
the rest by ``strategy`` (:data:`~ase_flatten.selection.baselines.STRATEGIES`),
the backend is fitted on them, the dataset is clustered and the model's force
errors on the test split are measured per cluster. The model directory
(:mod:`ase_flatten.models`) is built beside its place and swapped in when
complete; :func:`train_model` returns it loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

from .clustering_options import ClusteringSettings
from .exceptions import InputError
from .selection.baselines import PeerSettings

logger = logging.getLogger(__name__)

__all__ = ["TrainSettings", "new_backend", "train_model"]

#: Recorded in the model directory's output marker (replaced only by its like).
COMMAND = "ase-flatten train"
#: Strategies whose settings (:class:`PeerSettings`) the model records.
_PEER_STRATEGIES = ("ggfps", "quests", "committee", "lcmd")


@dataclass(frozen=True)
class TrainSettings:
    """What :func:`train_model` does.

    Parameters
    ----------
    backend : str
        Backend name (:func:`~ase_flatten.backends.available_backends`).
    size : int
        Training frames.
    strategy : str
        How the frames are chosen: ``random`` (the paper's default model),
        ``energy``, ``fps``, ``cur``, ``direct``, ``ggfps``, ``quests``,
        ``committee`` or ``lcmd`` (:func:`~ase_flatten.selection.baselines.
        select_frames`).
    params : dict
        Backend hyperparameters.
    seed : int
        Seeds the backend, the strategy and the clustering.
    test_fraction : float
        Held-out test share, in [0, 1).
    split_seed : int
        Seed of the test split.
    peers : PeerSettings
        Settings of the ``ggfps``, ``quests``, ``committee`` and ``lcmd``
        strategies.
    clustering : ClusteringSettings
        The clusters the test errors are measured on.
    domain : {"distance", "quests"}
        The applicability domain saved with the model
        (:func:`~ase_flatten.domain.make_domain`).
    """

    backend: str
    size: int
    strategy: str = "random"
    params: dict = field(default_factory=dict)
    seed: int = 0
    test_fraction: float = 0.1
    split_seed: int = 0
    peers: PeerSettings = field(default_factory=PeerSettings)
    clustering: ClusteringSettings = field(default_factory=ClusteringSettings)
    domain: str = "distance"


def settings_of(kind, settings, fields: dict):
    """``settings`` (a ``kind`` dataclass, or None) with ``fields`` replaced."""
    if settings is None:
        return kind(**fields)
    if not isinstance(settings, kind):
        raise TypeError(f"settings: a {kind.__name__}, got {type(settings).__name__}")
    return dataclasses.replace(settings, **fields) if fields else settings


def new_backend(name: str, params: dict, seed: int = 0):
    """A new, unfitted backend ``name`` with hyperparameters ``params``.

    Any complaint of the backend about its parameters (InputError, ValueError,
    TypeError) becomes one InputError naming the backend.
    """
    from .backends import make_backend

    params = dict(params)
    try:
        return make_backend(name, random_state=seed, **params)
    except InputError:
        raise
    except (ValueError, TypeError) as exc:
        given = ", ".join(f"{key}={value!r}" for key, value in params.items())
        raise InputError(
            f"backend {name}: bad hyperparameter ({exc}); given {given}"
        ) from exc


def train_model(
    data,
    output,
    settings: TrainSettings | None = None,
    *,
    overwrite: bool = False,
    **fields,
):
    """Train a backend on ``size`` frames of ``data`` and save the model directory.

    Parameters
    ----------
    data : Dataset, path or DataFile
        The labelled frames (a path is read with :func:`~ase_flatten.data.
        read_dataset`; a :class:`~ase_flatten.data.DataFile` says how).
    output : path
        The model directory to write. An existing non-empty folder is replaced
        only with ``overwrite``, and only when it is an earlier output of
        ``ase-flatten train``.
    settings : TrainSettings, optional
    overwrite : bool
    **fields
        Fields of :class:`TrainSettings` (replacing those of ``settings``), e.g.
        ``backend="sgdml", size=200``.

    Returns
    -------
    SavedModel
        The model as loaded from ``output``: its ``test_indices``, its errors
        per cluster on them (``cluster_force_rmse``, ``overall_force_rmse``,
        eV/Å) and its provenance (``meta``: strategy, seeds, timings in s).

    Raises
    ------
    InputError
        Bad data, settings or output, before any training.
    """
    from .data import data_path, load_data
    from .domain import require_domain
    from .files import atomic_directory, check_output_directory
    from .models import load_model
    from .selection.split import holdout_split

    settings = settings_of(TrainSettings, settings, fields)
    inputs = [data_path(data)]
    check_output_directory(output, COMMAND, overwrite, inputs)
    require_domain(settings.domain)
    backend = new_backend(settings.backend, settings.params, settings.seed)
    if settings.strategy == "lcmd":  # bmdal-reg and a backend with features, now
        from .selection.lcmd import check_lcmd

        check_lcmd(lambda seed: new_backend(settings.backend, settings.params, seed))
    dataset = load_data(data)
    test, pool = holdout_split(
        len(dataset), settings.test_fraction, settings.split_seed
    )
    start = time.perf_counter()
    train = _choose_frames(settings, dataset, pool)
    select_seconds = time.perf_counter() - start
    # the folder is made before training: an unwritable place fails now
    with atomic_directory(output, COMMAND, overwrite, inputs) as tmp:
        _fit_and_write(tmp, settings, backend, dataset, train, test, select_seconds)
    factory = settings.params.get("factory") if settings.backend == "ase" else None
    return load_model(output, factory=factory)


def _choose_frames(settings: TrainSettings, dataset, pool):
    """The ``size`` training frames of ``pool`` chosen by ``strategy``."""
    from .selection.baselines import select_frames

    return select_frames(
        settings.strategy,
        dataset,
        pool,
        settings.size,
        settings.seed,
        settings=settings.peers,
        make_backend=lambda seed: new_backend(settings.backend, settings.params, seed),
    )


def _fit_and_write(directory, settings, backend, dataset, train, test, select_seconds):
    """Fit ``backend`` on ``train``, measure it on ``test`` per cluster and write
    the model directory's files into ``directory``."""
    from .data import write_reference_frames
    from .error_analysis import model_errors
    from .models import write_model_files

    start = time.perf_counter()
    backend.fit(dataset, train, held_out=test)
    seconds = time.perf_counter() - start
    clusters = settings.clustering.fit(dataset, settings.seed)
    errors = None
    if len(test):
        errors = model_errors(backend, dataset, test, clusters.labels_)
    peer = {}
    if settings.strategy in _PEER_STRATEGIES:
        peer = {"strategy_settings": dataclasses.asdict(settings.peers)}
    write_model_files(
        directory,
        backend,
        train,
        dataset,
        clusters=clusters,
        cluster_errors=errors,
        domain=settings.domain,
        test_indices=test,
        strategy=settings.strategy,
        **peer,
        select_seconds=round(select_seconds, 2),
        seed=settings.seed,
        test_fraction=settings.test_fraction,
        split_seed=settings.split_seed,
        train_seconds=round(seconds, 2),
        test_force_rmse=errors.overall["force_rmse"] if errors else None,
    )
    write_reference_frames(dataset, directory / "train.xyz", train, settings.strategy)
