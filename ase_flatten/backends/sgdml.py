"""sGDML backend (sgdml 1.0.3): symmetric gradient-domain machine learning.

Trains in eV and Å on exactly the frames it is given. The kernel width ``sigma`` is
either given or chosen from a grid by the force RMSE on validation frames outside
the training set, as ``sgdml all`` does; a warm start (``fit(..., init_from=...)``,
``select --warm-start``) searches only the previous model's sigma and its
neighbours in the grid (``warm_sigma``). sGDML itself picks the analytic solver when
its own memory estimate fits the memory we allow (by default what the machine has
free now) and its iterative solver otherwise.

The library's quirks are wrapped here and nowhere else:

* ``import sgdml`` replaces the global logger class (coloured ``[INFO]`` from every
  logger created later): restored right after the import;
* numpy >= 2.4 removed ``np.in1d``, which sgdml's stratified sampling calls;
* only one ``GDMLTrain`` may exist per process: one is kept and reused;
* it draws random numbers from numpy's global generator: seeded for a fit or a
  stratified sample and restored afterwards (:func:`global_numpy_seed`); its
  energy-stratified sampling is :func:`energy_stratified_sample`;
* predictions come back as arrays in the model's units, energy as shape (M,);
* its analytic solver's Cholesky factorisation of a large kernel segfaults in
  multithreaded OpenBLAS on some machines: large fits run BLAS on one thread
  (see ``ONE_THREAD_ROWS``);
* its model files pickle a few fields: saved here without pickle (see
  :func:`plain_arrays`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..data import Dataset
from ..exceptions import FILE_READ_ERRORS, InputError
from .base import Backend
from .parameters import Boolean, Integer, ListOf, Options, Real

logger = logging.getLogger(__name__)

_TRAINER = None  # the one GDMLTrain of this process
MODEL_FILE = "sgdml_model.npz"

#: Kernel rows (3 x atoms x training frames) from which sGDML's solve runs with one
#: BLAS thread. Measured on this project's machine (AMD EPYC with AVX-512; numpy's
#: openblas64 0.3.31, scipy's OpenBLAS 0.3.30). Where OpenBLAS runs its SkylakeX
#: kernels (its own choice when first measured; OPENBLAS_CORETYPE=SkylakeX forces
#: it), a Cholesky factorisation (``scipy.linalg.cho_factor``, which sGDML's
#: analytic solver calls; ``numpy.linalg.cholesky`` alike) of 16,000 rows or more
#: segfaults on 2 threads (16,380 rows: 5 crashes in 5 tries), 14,000 rows work on
#: 2 threads, and 18,900 rows work on 1 thread (53 s). With the Haswell kernels it
#: picked on 2026-11-26, 16,380 and 18,900 rows worked on 2 threads (11 of 11). A
#: segfault kills the process with no message, so the limit sits below 14,000 with
#: a margin; below it the solve keeps every thread.
ONE_THREAD_ROWS = 12_000


@contextlib.contextmanager
def global_numpy_seed(seed: int):
    """Inside the block numpy's global generator is seeded with ``seed``.

    sGDML draws from it; the caller's state comes back on exit.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def energy_stratified_sample(energies: np.ndarray, n: int, seed: int) -> np.ndarray:
    """sGDML's energy-stratified choice of ``n`` frames (``draw_strat_sample``).

    A Freedman-Diaconis histogram of ``energies`` (shape (M,), any unit), frames
    spread over its bins; returns indices into ``energies``, shape (n,).
    """
    import_sgdml()
    from sgdml.train import GDMLTrain

    with global_numpy_seed(seed):
        # draw_strat_sample does not use its instance: no GDMLTrain is created
        idx = GDMLTrain.draw_strat_sample(None, energies, n)
    return np.asarray(idx, dtype=int)


def import_sgdml():
    """Import sgdml with its side effects undone; returns the ``sgdml`` module."""
    SGDMLBackend.require("torch")  # sgdml probes torch at import: load it first
    logger_class = logging.getLoggerClass()
    sgdml = SGDMLBackend.require("sgdml")
    from sgdml import predict, train  # noqa: F401  (registers submodules)

    logging.setLoggerClass(logger_class)
    # sgdml's warnings are long multi-line advice texts: keep only errors unless the
    # user asked for debug output
    quiet = logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.ERROR
    logging.getLogger("sgdml").setLevel(quiet)
    if not hasattr(np, "in1d"):  # numpy >= 2.4
        np.in1d = np.isin
    return sgdml


def trainer(max_memory_gb: float):
    """The process-wide ``GDMLTrain``, its memory limit set to ``max_memory_gb``."""
    global _TRAINER
    import_sgdml()
    from sgdml.train import GDMLTrain

    if _TRAINER is None:
        _TRAINER = GDMLTrain(max_processes=1)
    _TRAINER._max_memory = max_memory_gb  # what sGDML compares its estimate to
    return _TRAINER


def blas_threads_for(rows: int):
    """A context in which sGDML's solve of a kernel with ``rows`` rows is safe.

    One BLAS thread (``threadpoolctl``) from ``ONE_THREAD_ROWS`` rows on, where
    multithreaded OpenBLAS crashed in the Cholesky factorisation; no change below.
    The limit applies from this call until the ``with`` block ends.
    """
    if rows < ONE_THREAD_ROWS:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    logger.debug("sGDML: %d kernel rows, solving with one BLAS thread", rows)
    return threadpool_limits(limits=1, user_api="blas")


def free_memory_gb() -> int:
    """Memory available now, in whole GB (sGDML's unit)."""
    import psutil

    return max(1, psutil.virtual_memory().available // 2**30)


def sgdml_dataset(dataset: Dataset, idx: np.ndarray) -> dict:
    """sGDML's dataset dict for frames ``idx``, in eV and Å."""
    import sgdml

    return {
        "type": "d",
        "code_version": sgdml.__version__,
        "name": np.array(dataset.formula),
        "theory": np.array("unknown"),
        "z": dataset.numbers,
        "R": dataset.positions[idx],
        "E": dataset.energies[idx],
        "F": dataset.forces[idx],
        "e_unit": np.array("eV"),
        "r_unit": np.array("Ang"),
    }


def sigma_neighbours(sigma: int, grid) -> list[int]:
    """``sigma`` and the values of ``grid`` next to it on either side, ascending."""
    values = sorted(set(grid))
    below = [g for g in values if g < sigma][-1:]
    above = [g for g in values if g > sigma][:1]
    return [*below, sigma, *above]


class SGDMLBackend(Backend):
    """sGDML force field.

    Parameters (``defaults``)
    -------------------------
    sigma : int or None
        Kernel length scale; None chooses from ``sigma_grid`` on validation frames.
    sigma_grid : list of int
        Candidates (validation-chosen sigma is 10-20 on 500 K xTB data).
    n_valid : int
        Validation frames drawn outside the training set and the held-out test
        frames when none are given.
    lam : float
        Regularisation strength.
    use_sym : bool
        Permutational symmetries (sGDML); False gives plain GDML.
    max_memory_gb : float or None
        Memory sGDML may plan for; None uses the memory free at training time.
        Above it, sGDML switches from the analytic to the iterative solver.
    warm_sigma : {"neighbours", "keep"}
        A warm start's kernel width: the previous model's and its neighbours in
        ``sigma_grid`` chosen on validation frames (three solves), or the
        previous model's kept (one solve).
    """

    name = "sgdml"
    extra = "sgdml"
    defaults = {
        "sigma": None,
        "sigma_grid": [5, 10, 20, 40, 80],
        "n_valid": 200,
        "lam": 1e-10,
        "use_sym": True,
        "max_memory_gb": None,
        "warm_sigma": "neighbours",
    }
    parameter_constraints = {
        "sigma": [Integer(1), None],
        "sigma_grid": [ListOf(Integer(1))],
        "n_valid": [Integer(1)],
        "lam": [Real(0, closed="neither")],
        "use_sym": [Boolean()],
        "max_memory_gb": [Real(0, closed="neither"), None],
        "warm_sigma": [Options(("neighbours", "keep"))],
    }
    batch_size = 500
    #: a warm start narrows the sigma search to the previous width (``warm_sigma``)
    supports_warm_start: ClassVar[bool] = True

    def _fit(self, dataset: Dataset, train_idx: np.ndarray, val_idx) -> None:
        p = self.params
        grid = [p["sigma"]] if p["sigma"] is not None else list(p["sigma_grid"])
        with global_numpy_seed(self.random_state):  # sgdml draws from it
            self._fit_seeded(dataset, train_idx, val_idx, grid)

    def _fit_warm(self, dataset: Dataset, train_idx, val_idx, init_from) -> None:
        """sGDML's warm start: the search narrowed to where ``init_from`` chose.

        The solve is exact, so no weights carry over; what a warm start saves
        is most of the search over ``sigma_grid``: the previous sigma and its
        neighbours in the grid (``warm_sigma="neighbours"``), or the previous
        sigma alone (``"keep"``). A ``sigma`` given explicitly wins.
        """
        p = self.params
        if p["sigma"] is not None:
            grid = [p["sigma"]]
        elif p["warm_sigma"] == "keep":
            grid = [init_from.sigma_]
        else:
            grid = sigma_neighbours(init_from.sigma_, p["sigma_grid"])
        with global_numpy_seed(self.random_state):
            self._fit_seeded(dataset, train_idx, val_idx, grid)
        logger.info(
            "sGDML warm start: sigma from %s (the previous model's %d)",
            grid,
            init_from.sigma_,
        )

    def _fit_seeded(
        self, dataset: Dataset, train_idx: np.ndarray, val_idx, grid: list[int]
    ) -> None:
        start = time.perf_counter()
        p = self.params
        if len(train_idx) < 2:
            raise InputError("sGDML needs at least 2 training frames")
        memory = p["max_memory_gb"]
        gdml = trainer(free_memory_gb() if memory is None else memory)
        train = sgdml_dataset(dataset, train_idx)
        task = gdml.create_task(
            train,
            len(train_idx),
            train,
            0,
            sig=grid[0],
            lam=p["lam"],
            use_sym=p["use_sym"],
        )
        if not np.array_equal(task["idxs_train"], np.arange(len(train_idx))):
            raise RuntimeError("sgdml resampled the training frames")

        rows = 3 * len(dataset.numbers) * len(train_idx)  # sGDML's kernel size
        if len(grid) == 1:
            with blas_threads_for(rows):
                self.model_ = gdml.train(task)
            self.validation_ = {}
        else:
            if val_idx is None:
                val_idx = self.validation_frames(len(dataset), train_idx, p["n_valid"])
            if len(val_idx) == 0:
                raise InputError(
                    "no frames left outside the training set and the test split "
                    "to choose sigma; give sigma or train on fewer frames"
                )
            self.validation_indices_ = np.asarray(val_idx, dtype=int)
            self.validation_ = {}
            best = None
            for sig in grid:
                with blas_threads_for(rows):
                    model = gdml.train({**task, "sig": sig})
                self.model_ = model
                self._predictor = None
                _, forces = self._predict(dataset.positions[val_idx])
                rmse = float(np.sqrt(np.mean((forces - dataset.forces[val_idx]) ** 2)))
                self.validation_[sig] = rmse
                logger.debug("sigma %d: validation force RMSE %.4f eV/Å", sig, rmse)
                if best is None or rmse < best[0]:
                    best = (rmse, model)
            self.model_ = best[1]
            # the edge of sigma_grid, not of a warm start's narrowed search
            if not min(p["sigma_grid"]) < self.sigma_ < max(p["sigma_grid"]):
                logger.warning(
                    "sGDML: the best sigma %d is at the edge of the grid %s; "
                    "consider widening sigma_grid",
                    self.sigma_,
                    grid,
                )
        self._predictor = None
        logger.info(
            "sGDML: %d frames, sigma %d (%s solver, %d permutations) in %.1f s%s",
            len(train_idx),
            int(self.model_["sig"]),
            str(self.model_["solver_name"]),
            len(self.model_["perms"]),
            time.perf_counter() - start,
            f"; validation force RMSE by sigma {self.validation_}"
            if self.validation_
            else "",
        )

    @property
    def sigma_(self) -> int:
        """Kernel width of the trained model."""
        return int(self.model_["sig"])

    @property
    def solver_(self) -> str:
        """'analytic' or 'cg' (sGDML's iterative solver)."""
        return str(self.model_["solver_name"])

    def _predict(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_predictor", None) is None:
            import_sgdml()
            from sgdml.predict import GDMLPredict

            self._predictor = GDMLPredict(
                self.model_, max_processes=1, log_level=logging.WARNING
            )
        m = len(positions)
        energies, forces = self._predictor.predict(positions.reshape(m, -1))
        return (
            np.asarray(energies, dtype=float).reshape(m),
            np.asarray(forces, dtype=float).reshape(m, -1, 3),
        )

    def _save(self, directory: Path) -> None:
        np.savez_compressed(directory / MODEL_FILE, **plain_arrays(self.model_))

    def _load(self, directory: Path) -> None:
        self.model_ = read_model(directory / MODEL_FILE)
        self._predictor = None

    def saved_numbers(self) -> np.ndarray | None:
        """The atomic numbers sGDML stored in its model file (``z``)."""
        z = self.model_.get("z") if isinstance(self.model_, dict) else None
        return None if z is None else np.asarray(z, dtype=int).reshape(-1)

    def bare_calculator(self, directory: str | Path):
        """sGDML's own ASE calculator for the saved model, in eV and Å."""
        path = Path(directory) / MODEL_FILE
        read_model(path)  # sgdml's own reader unpickles: check the file first
        import_sgdml()
        from sgdml.intf.ase_calc import SGDMLCalculator

        return SGDMLCalculator(str(path), E_to_eV=1.0, F_to_eV_Ang=1.0)


def plain_arrays(model: dict) -> dict:
    """sGDML's model dict with every value a plain (non-object) numpy array.

    sGDML's own files pickle three fields as Python objects: ``md5_test`` (None,
    dropped here) and ``f_err`` / ``e_err`` (dicts of floats, stored as structured
    arrays, so ``model["f_err"]["rmse"]`` and ``"e_err" in model`` still work).
    The result loads with ``allow_pickle=False``.
    """
    plain = {}
    for key, value in model.items():
        if value is None:
            continue
        if isinstance(value, dict):
            dtype = [(name, float) for name in value]
            value = np.array(tuple(value.values()), dtype=dtype)
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise TypeError(f"sGDML model field {key!r} is a Python object")
        plain[key] = value
    return plain


def read_model(path: Path) -> dict:
    """The sGDML model dict of ``path``, read without pickle; InputError if bad.

    An ``.npz`` with object arrays (sGDML's own format, models saved by
    ase-flatten before version 2 of the model directory, or a file with a planted
    payload) is refused: unpickling it could run code.
    """
    if not path.is_file():
        raise InputError(f"{path}: cannot load sGDML model (no such file)")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: cannot load sGDML model (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            model = dict(npz)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise InputError(f"{path}: cannot load sGDML model ({exc})") from exc
        raise InputError(
            f"{path}: holds pickled Python objects, which are never loaded (they "
            "could run code); a model saved by an older ase-flatten or by sGDML "
            "itself: retrain it with `ase-flatten train`"
        ) from exc
    except FILE_READ_ERRORS as exc:
        raise InputError(f"{path}: cannot load sGDML model ({exc})") from exc
    if str(model.get("type")) != "m":
        raise InputError(f"{path}: cannot load sGDML model (not an sGDML model)")
    if str(model.get("e_unit", "eV")) != "eV":
        raise InputError(
            f"{path}: cannot load sGDML model (energy unit {model['e_unit']}, "
            "expected eV)"
        )
    return model
