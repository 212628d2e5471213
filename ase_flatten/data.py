"""The in-memory dataset every step works on, and the readers that fill it.

A :class:`Dataset` holds one molecule's labelled frames as arrays in ASE units:
positions (M, N, 3) in Å, atomic numbers (N,), energies (M,) in eV and forces
(M, N, 3) in eV/Å. Everything downstream takes a Dataset and integer frame indices;
nothing else re-reads files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from .exceptions import FILE_READ_ERRORS, InputError, option

logger = logging.getLogger(__name__)

__all__ = [
    "REF_ENERGY_KEY",
    "REF_FORCES_KEY",
    "DataFile",
    "Dataset",
    "absolute_source",
    "check_force_scale",
    "frame_hashes",
    "frame_label",
    "load_data",
    "read_dataset",
    "read_frames",
    "same_frames",
    "split_selection",
    "write_reference_frames",
]

#: ASE formats whose frames can be selected by a query (``data.db@id<100``)
DATABASE_FORMATS = ("db", "json", "postgresql", "mysql")

#: Largest plausible RMS force component of a dataset in eV/Å. Measured on the
#: GFN2-xTB MD at 500 K of ethanol, salicylic acid, toluene and uracil (20,000
#: frames each): RMS 1.23-1.41 eV/Å, largest frame RMS 3.07, 99.9th percentile of
#: |F| 5.3-5.9 and largest |F| 10.7 eV/Å. The same forces in kcal/(mol Å) are 23
#: times larger (RMS 28-33); 10 lies 7x above the eV data and still catches
#: kcal/mol data of MD at 100 K (RMS about 0.55 eV/Å x 23 = 13).
MAX_FORCE_RMS = 10.0

#: Grid (Å) on which positions are compared when frames are identified by content
#: (:func:`frame_hashes`). Text files keep positions to 1e-8 Å (extxyz) and float32
#: to about 5e-7 Å, far below it; between two MD steps of 0.5 fs hydrogens move
#: about 0.02 Å, far above it.
HASH_GRID = 1e-3


def label_options() -> tuple[str, str, str]:
    """How "has no energy" messages name the label keys, and an example of them.

    The parameters ``energy_key=KEY`` for a Python caller, the flags
    ``--energy-key KEY`` inside a command line
    (:func:`~ase_flatten.exceptions.option`).
    """
    return (
        option("energy_key", "KEY"),
        option("forces_key", "KEY"),
        f"MACE files: {option('energy_key', 'REF_energy')} "
        f"{option('forces_key', 'REF_forces')}",
    )


#: Where files written for other codes keep the reference labels: MACE's convention
#: (``mace_run_train --energy_key REF_energy --forces_key REF_forces``), which no
#: calculator overwrites.
REF_ENERGY_KEY = "REF_energy"
REF_FORCES_KEY = "REF_forces"


@dataclass(eq=False)
class Dataset:
    """Labelled frames of one molecule, in eV and Å.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
        Atomic numbers, the same order in every frame.
    positions : ndarray, shape (M, N, 3)
        Cartesian positions in Å.
    energies : ndarray, shape (M,)
        Potential energies in eV.
    forces : ndarray, shape (M, N, 3)
        Forces in eV/Å.
    source : str
        Where the frames came from (a path), used in messages.
    energy_key, forces_key : str or None
        The ``info`` / ``arrays`` keys the labels were read from (None: the
        calculator's ``energy`` / ``forces``); models record them, so that later
        commands read their dataset the same way.
    """

    numbers: np.ndarray
    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    source: str = "<memory>"
    energy_key: str | None = None
    forces_key: str | None = None

    def __post_init__(self):
        self.numbers = np.asarray(self.numbers, dtype=int).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=float)
        self.energies = np.asarray(self.energies, dtype=float).reshape(-1)
        self.forces = np.asarray(self.forces, dtype=float)
        n_frames, n_atoms = len(self.energies), len(self.numbers)
        if n_frames == 0:
            raise InputError(f"{self.source}: no frames")
        for name, array in (("positions", self.positions), ("forces", self.forces)):
            if array.shape != (n_frames, n_atoms, 3):
                raise InputError(
                    f"{self.source}: {name} have shape {array.shape}, expected "
                    f"({n_frames}, {n_atoms}, 3)"
                )
        for name in ("positions", "energies", "forces"):
            _check_finite(getattr(self, name), name, self.source)

    def __len__(self) -> int:
        return len(self.energies)

    @property
    def n_atoms(self) -> int:
        """Number of atoms per frame."""
        return len(self.numbers)

    @property
    def formula(self) -> str:
        """Chemical formula, e.g. ``C2H6O``."""
        return Atoms(numbers=self.numbers).get_chemical_formula()

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """Return a new Dataset holding the frames ``indices``, in that order."""
        idx = np.asarray(indices, dtype=int)
        return Dataset(
            self.numbers,
            self.positions[idx],
            self.energies[idx],
            self.forces[idx],
            source=self.source,
            energy_key=self.energy_key,
            forces_key=self.forces_key,
        )

    def to_atoms(self, i: int) -> Atoms:
        """Frame ``i`` as :class:`ase.Atoms` with its reference energy and forces.

        The labels sit in a :class:`SinglePointCalculator` and, under the keys
        ``ref_energy`` / ``ref_forces``, in ``info`` / ``arrays``, where they survive
        when another calculator is attached.
        """
        atoms = Atoms(numbers=self.numbers, positions=self.positions[i])
        atoms.info["ref_energy"] = float(self.energies[i])
        atoms.arrays["ref_forces"] = self.forces[i].copy()
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(self.energies[i]), forces=self.forces[i].copy()
        )
        return atoms

    def fingerprint(self) -> str:
        """SHA-256 of the numbers, positions, energies and forces (first 16 hex)."""
        digest = hashlib.sha256()
        for array in (self.numbers, self.positions, self.energies, self.forces):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def frame_hashes(self, indices=None) -> np.ndarray:
        """Content hashes of frames (atomic numbers and positions), see
        :func:`frame_hashes`."""
        positions = self.positions if indices is None else self.positions[indices]
        return frame_hashes(self.numbers, positions)

    def write(
        self,
        path: str | os.PathLike,
        indices=None,
        *,
        energy_key: str | None = None,
        forces_key: str | None = None,
        **info_arrays,
    ) -> None:
        """Write frames as extended XYZ with energy and forces.

        Parameters
        ----------
        path : path
            Output file (written atomically).
        indices : sequence of int, optional
            Frames to write (default: all).
        energy_key, forces_key : str, optional
            Store the labels in ``info[energy_key]`` / ``arrays[forces_key]``
            (e.g. :data:`REF_ENERGY_KEY`, MACE's ``REF_energy``) instead of as the
            frames' calculator results (``energy=`` / ``forces`` in extxyz).
        **info_arrays
            Extra per-frame values of length ``len(indices)`` stored in ``info``
            (strings too, such as MACE's ``config_type``).
        """
        import ase.io

        from .files import atomic_path

        idx = np.arange(len(self)) if indices is None else np.asarray(indices, int)
        frames = []
        for k, i in enumerate(idx):
            atoms = Atoms(numbers=self.numbers, positions=self.positions[i])
            atoms.info["frame"] = int(i)
            for key, values in info_arrays.items():
                atoms.info[key] = np.asarray(values)[k].item()
            energy, forces = float(self.energies[i]), self.forces[i].copy()
            if energy_key is None and forces_key is None:
                atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
            else:
                atoms.info[energy_key or "energy"] = energy
                atoms.arrays[forces_key or "forces"] = forces
            frames.append(atoms)
        with atomic_path(path) as tmp:
            ase.io.write(tmp, frames, format="extxyz")


def frame_hashes(numbers, positions, grid: float = HASH_GRID) -> np.ndarray:
    """Hashes identifying frames by content, whichever file they come from.

    Each frame's atomic numbers and positions rounded to ``grid`` Å are hashed
    twice, on two grids shifted by half a cell: the same frame read from another
    file (extxyz text, a database, an npz, float32) can fall across a cell border
    of one grid in some coordinate, but then lies inside the cells of the other.
    Two frames are the same when either hash agrees (:func:`same_frames`).

    Parameters
    ----------
    numbers : array-like, shape (N,)
    positions : array-like, shape (M, N, 3)
        Å.
    grid : float
        Rounding grid (Å), :data:`HASH_GRID` by default.

    Returns
    -------
    ndarray of uint64, shape (M, 2)
    """
    atoms = np.ascontiguousarray(numbers, dtype="<i8").tobytes()
    positions = np.asarray(positions, dtype=float)
    scaled = (
        positions.reshape(len(positions), positions[0].size if len(positions) else 0)
        / grid
    )
    hashes = np.empty((len(scaled), 2), dtype=np.uint64)
    for column, shift in enumerate((0.5, 0.0)):
        cells = np.floor(scaled + shift).astype("<i8")
        for i, row in enumerate(cells):
            digest = hashlib.blake2b(atoms + row.tobytes(), digest_size=8).digest()
            hashes[i, column] = int.from_bytes(digest, "little")
    return hashes


def same_frames(hashes: np.ndarray, known: np.ndarray) -> np.ndarray:
    """True for each frame of ``hashes`` (M, 2) whose content is among ``known``."""
    hashes, known = np.asarray(hashes), np.asarray(known)
    if not len(known):
        return np.zeros(len(hashes), dtype=bool)
    return np.isin(hashes[:, 0], known[:, 0]) | np.isin(hashes[:, 1], known[:, 1])


def write_reference_frames(
    dataset: Dataset, path, indices, config_type, **info_arrays
) -> None:
    """Frames as extxyz for other codes (``mace_run_train``): the labels under
    ``REF_energy`` / ``REF_forces``, why each frame is there as ``config_type``.

    Parameters
    ----------
    dataset : Dataset
    path : path
        Output file (written atomically).
    indices : sequence of int
        Frames to write.
    config_type : str or sequence of str
        One for all frames or one per frame (``initial``, ``flatten_iter3``, ...).
    **info_arrays
        Further per-frame ``info`` values, as for :meth:`Dataset.write`.
    """
    indices = np.asarray(indices, dtype=int)
    config_type = np.broadcast_to(np.asarray(config_type, dtype=str), len(indices))
    dataset.write(
        path,
        indices,
        energy_key=REF_ENERGY_KEY,
        forces_key=REF_FORCES_KEY,
        config_type=config_type,
        **info_arrays,
    )


def _check_finite(array: np.ndarray, name: str, source: str) -> None:
    if np.isfinite(array).all():
        return
    flat = array.reshape(len(array), -1) if array.ndim > 1 else array[:, None]
    frame = int(np.flatnonzero(~np.isfinite(flat).all(axis=1))[0])
    raise InputError(f"{source}: frame {frame} has non-finite {name} (NaN or inf)")


def split_selection(path: str | os.PathLike, index=None) -> tuple[Path, object, str]:
    """Split ASE's ``file@selection`` syntax and merge it with ``index``.

    ``data.extxyz@0:300``, ``data.traj@-10:``, ``data.xyz@5`` select frames as
    Python slices do; ``data.db@id<100`` (ASE databases only) is a query. The
    name is split at its last ``@`` only when no file of that exact name exists.

    Parameters
    ----------
    path : path
        File name, optionally with ``@selection``.
    index : int, slice, str or None
        Frames to read when the name holds no selection (``None`` or ``":"``:
        all). Selecting both ways is an error.

    Returns
    -------
    path : Path
        The file.
    index : int, slice or str
        What to read: an int or slice, or a database query string.
    source : str
        ``path`` with ``@selection`` when not every frame is read: what datasets
        and models record as their origin.
    """
    from ase.io.formats import string2index

    text = str(path)
    selection = None
    every = index is None or _index_text(index) == ":"
    if "@" in os.path.basename(text) and not os.path.exists(text):
        text, selection = text.rsplit("@", 1)
        if not selection:
            raise InputError(f"{path}: nothing after @; e.g. {text}@0:300")
        if not every:
            raise InputError(
                f"{path}: frames selected twice, by @{selection} and by index "
                f"{_index_text(index)}; give one of them"
            )
    elif not every:
        selection = _index_text(index)
    if selection is None:
        return Path(text), slice(None), text
    try:
        index = string2index(selection)
    except ValueError:
        index = selection  # a database query such as id<100
    return Path(text), index, f"{text}@{selection}"


def _index_text(index) -> str:
    """``index`` as ASE's selection syntax (``0:300``, ``-1``, ``::2``)."""
    if not isinstance(index, slice):
        return str(index)
    start, stop = ("" if v is None else str(v) for v in (index.start, index.stop))
    return f"{start}:{stop}" + ("" if index.step is None else f":{index.step}")


def absolute_source(source: str) -> str | None:
    """A dataset's ``source`` with the file as an absolute path (None: in memory).

    ``data.extxyz@0:300`` run in ``/home/me`` gives ``/home/me/data.extxyz@0:300``:
    what a model records so that it finds its data from another folder.
    """
    if not source or source.startswith("<"):
        return None
    text, selection = source, ""
    if "@" in os.path.basename(text) and not os.path.exists(text):
        text, selection = text.rsplit("@", 1)
        selection = "@" + selection
    return str(Path(text).resolve()) + selection


def read_frames(path: str | os.PathLike, index=None, format: str | None = None):
    """Read frames with ASE, avoiding ASE's quadratic path for gzipped XYZ.

    ``ase.io.read`` on a ``.xyz.gz`` seeks backwards through the gzip stream for
    every frame (20,000 frames: about 20 minutes). Decompressing into memory first
    and parsing the text takes about 2 s.

    Parameters
    ----------
    path : path
        Any file ASE reads, optionally with ``@selection`` (see
        :func:`split_selection`).
    index : int, slice or str, optional
        Frames to read when ``path`` has no ``@selection`` (default: all).
    format : str, optional
        ASE format name.

    Returns
    -------
    list of ase.Atoms
    """
    import ase.io

    path, index, source = split_selection(path, index)
    _check_file(path)
    _check_query(path, index, format, source)
    check_plausible_file(path, index, format)
    try:
        if path.suffix == ".gz" and Path(path.stem).suffix in (".xyz", ".extxyz"):
            with gzip.open(path, "rt") as handle:
                text = handle.read()
            frames = ase.io.read(io.StringIO(text), index, format=format or "extxyz")
        else:
            frames = ase.io.read(
                path, index, format=format, do_not_split_by_at_sign=True
            )
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is the file's:
        # damaged extxyz and traj files made ASE's readers raise a dozen types,
        # AttributeError, RuntimeError and MemoryError among them
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(
            f"{path}: cannot read as a trajectory ({type(exc).__name__}: {message})"
        ) from exc
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise InputError(f"{source}: no frames")
    return frames


def check_plausible_file(path: Path, index=None, format: str | None = None) -> None:
    """Refuse, before reading it, a text trajectory that cannot be one or cannot fit.

    ASE reads an extended XYZ file line by line into memory: a 2 GB file of NUL
    bytes (a sparse or damaged file) is one 2 GB line and needs more than 8 GB
    before it fails, and ASE's frames take 3-5 times the file's bytes (measured on
    20,000 frames: ethanol 4.4x, salicylic acid 2.9x). So for XYZ files, a few
    blocks spread over the file are checked for NUL bytes, and reading every frame
    is refused when it would need more memory than the machine has available. The
    cost is a few reads of 4 kB, whatever the file's size.
    """
    if path.suffix in (".gz", ".bz2", ".xz"):
        return  # compressed: binary, read through a decompressor
    if (format or _guess_format(path)) not in TEXT_FORMATS:
        return
    size = path.stat().st_size
    with open(path, "rb") as handle:
        for offset in sorted({int(size * q) for q in (0, 0.25, 0.5, 0.75)}):
            handle.seek(offset)
            block = handle.read(SNIFF_BYTES)
            if b"\0" in block:
                at = offset + block.index(b"\0")
                raise InputError(
                    f"{path}: NUL bytes at byte {at:,} of {size:,}: not a text "
                    "trajectory (a sparse, truncated or damaged file?)"
                )
    if isinstance(index, slice) and index == slice(None):
        need = MEMORY_PER_TEXT_BYTE * size
        available = _available_memory()
        if available is not None and need > available:
            raise InputError(
                f"{path}: {size / 1e9:.1f} GB of text; reading every frame needs "
                f"about {need / 1e9:.0f} GB, {available / 1e9:.1f} GB are available: "
                "read a part (FILE@0:N) or convert it to an sGDML .npz"
            )


#: ASE formats read as text by :func:`check_plausible_file`.
TEXT_FORMATS = ("extxyz", "xyz")
#: Bytes read per probe of :func:`check_plausible_file`.
SNIFF_BYTES = 4096
#: Memory per byte of extended XYZ while it is read: ASE's frames (2.9-4.4x,
#: measured) and the arrays copied out of them.
MEMORY_PER_TEXT_BYTE = 5


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), None elsewhere."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_query(path: Path, index, format: str | None, source: str) -> None:
    """Refuse, in one line, a selection the file's format cannot do."""
    query = isinstance(index, str)
    stepped = isinstance(index, slice) and index.step not in (None, 1)
    if not (query or stepped):
        return
    database = (format or _guess_format(path)) in DATABASE_FORMATS
    if query and not database:
        raise InputError(
            f"{source}: {index!r} is not a frame index or slice (start:stop:step); "
            "queries such as id<100 select from ASE databases (.db) only"
        )
    if stepped and database:
        raise InputError(
            f"{source}: ASE databases are read in steps of 1; give start:stop or a "
            "query such as id<100"
        )


def _guess_format(path: Path) -> str | None:
    from ase.io.formats import filetype

    try:
        return filetype(str(path))
    except Exception:  # noqa: BLE001 - an unknown type fails later, in the reader
        return None


def check_searchable(path: Path) -> None:
    """One line for a path that cannot even be looked up (no search permission).

    A path that does not exist passes: the caller says what was missing.
    """
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def _check_file(path: Path) -> None:
    check_searchable(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a trajectory file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")


def frame_label(atoms: Atoms, key: str | None, kind: str):
    """Energy or forces of one frame: a named info/arrays key, else the calculator.

    Parameters
    ----------
    atoms : ase.Atoms
    key : str or None
        ``atoms.info[key]`` (energy) or ``atoms.arrays[key]`` (forces); None
        reads the attached calculator's results, then ``info['energy']`` /
        ``arrays['forces']``.
    kind : {"energy", "forces"}

    Returns
    -------
    float, ndarray of shape (N, 3), or None when the frame has no such label
    """
    store = atoms.info if kind == "energy" else atoms.arrays
    if key is not None:
        return store.get(key)
    if atoms.calc is not None:
        value = atoms.calc.results.get(kind)
        if value is None and kind == "energy":
            value = atoms.calc.results.get("free_energy")
        if value is not None:
            return value
    return store.get(kind)


def dataset_from_frames(
    frames: Sequence[Atoms],
    source: str = "<memory>",
    energy_key: str | None = None,
    forces_key: str | None = None,
    label_flags: tuple[str, str, str] | None = None,
) -> Dataset:
    """Copy positions and reference labels out of ASE frames into a Dataset.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        One molecule, the same atoms in the same order in every frame.
    source : str
        Name used in error messages.
    energy_key, forces_key : str, optional
        Read labels from ``atoms.info[energy_key]`` / ``atoms.arrays[forces_key]``
        (for example MACE's ``REF_energy``). By default they come from the attached
        calculator (extxyz ``energy``/``forces``), then from ``info['energy']`` /
        ``arrays['forces']``.
    label_flags : (str, str, str), optional
        The command-line flags that set the two keys and an example of them,
        named when a frame has no label (default: :func:`label_options`, the
        parameters or ``--energy-key`` / ``--forces-key``).
    """
    if len(frames) == 0:
        raise InputError(f"{source}: no frames")
    first = frames[0]
    numbers = first.get_atomic_numbers()
    n_frames, n_atoms = len(frames), len(first)
    positions = np.empty((n_frames, n_atoms, 3))
    energies = np.empty(n_frames)
    forces = np.empty((n_frames, n_atoms, 3))
    for i, atoms in enumerate(frames):
        if len(atoms) != n_atoms or not np.array_equal(atoms.numbers, numbers):
            raise InputError(
                f"{source}: frame {i} is {atoms.get_chemical_formula()} with "
                f"{len(atoms)} atoms, frame 0 is {first.get_chemical_formula()} with "
                f"{n_atoms}: a dataset holds one molecule, atoms in the same order"
            )
        energy = frame_label(atoms, energy_key, "energy")
        if energy is None:
            raise InputError(
                _missing_label(source, i, atoms, "energy", energy_key, label_flags)
            )
        frame_forces = frame_label(atoms, forces_key, "forces")
        if frame_forces is None:
            raise InputError(
                _missing_label(source, i, atoms, "forces", forces_key, label_flags)
            )
        positions[i] = atoms.positions
        energies[i] = _energy_value(energy, source, i, energy_key)
        forces[i] = _forces_value(frame_forces, source, i, forces_key, n_atoms)
    return Dataset(
        numbers,
        positions,
        energies,
        forces,
        source=source,
        energy_key=energy_key,
        forces_key=forces_key,
    )


def _missing_label(
    source: str, i: int, atoms: Atoms, kind: str, key, flags=None
) -> str:
    """One line: which label is missing, which keys the frame has, which flag."""
    store = "info" if kind == "energy" else "arrays"
    if flags is None:
        keys = label_options()
    else:
        keys = (f"{flags[0]} KEY", f"{flags[1]} KEY", flags[2])
    where = (
        f"no {store} key {key!r}"
        if key
        else f"no calculator {kind} and no {store} key {kind!r}"
    )
    info = sorted(atoms.info)
    arrays = sorted(k for k in atoms.arrays if k not in ("numbers", "positions"))
    return (
        f"{source}: frame {i} has no {kind} ({where}); its info keys: "
        f"{', '.join(info) or 'none'}; its arrays keys: {', '.join(arrays) or 'none'}; "
        f"name the labels with {keys[0]} {keys[1]} ({keys[2]})"
    )


def _key_text(key: str | None, kind: str) -> str:
    if key is None:
        return f"the {kind}"
    return f"{kind} key {key!r} ({option(kind + '_key')})"


def _energy_value(value, source: str, frame: int, key: str | None) -> float:
    """One frame's energy as a float; one line when it is not a single number."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.size != 1:
        shown = repr(value) if array.size <= 3 else f"{array.size} values"
        raise InputError(
            f"{source}: frame {frame}: {_key_text(key, 'energy')} holds {shown}, "
            "not one number"
        )
    return float(array.reshape(-1)[0])


def _forces_value(value, source: str, frame: int, key: str | None, n_atoms: int):
    """One frame's forces as an (N, 3) float array; one line when they are not."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.size != 3 * n_atoms:
        kind = "text" if array.dtype.kind in "USO" else f"{array.dtype.name} values"
        raise InputError(
            f"{source}: frame {frame}: {_key_text(key, 'forces')} holds {kind} of "
            f"shape {array.shape}, not forces of shape ({n_atoms}, 3)"
        )
    return array.astype(float).reshape(n_atoms, 3)


def check_isolated(frames: Sequence[Atoms], source: str) -> None:
    """Refuse periodic frames: every model here describes one isolated molecule.

    A periodic frame trained as if isolated gives a model that its own
    calculator then refuses (it raises for ``pbc``), so it is refused here, when
    the data is read.
    """
    for i, atoms in enumerate(frames):
        if atoms.pbc.any():
            raise InputError(
                f"{source}: frame {i} is periodic (pbc={atoms.pbc.tolist()}); "
                "ase-flatten models one isolated molecule: write the frames with "
                "pbc=False and the molecule whole"
            )


def check_atom_order(dataset: Dataset, chunk: int = 2000) -> None:
    """Refuse frames whose atoms are in another order than the others'.

    The same elements in the same order can still be different atoms: two
    hydrogens swapped in some frames. The nearest heavy atom of every hydrogen
    (:func:`~ase_flatten.atom_order.hydrogen_partners`) shows it: a frame in
    which two or more hydrogens sit next to another heavy atom than in most
    frames has its atoms in another order (a proton transfer moves one hydrogen).
    Costs one distance per hydrogen and heavy atom per frame.

    Raises
    ------
    InputError
        Naming the first such frame, its hydrogens and how many frames differ.
    """
    from .atom_order import hydrogen_partners

    numbers = dataset.numbers
    if not (numbers == 1).any() or not (numbers > 1).any():
        return
    partners = hydrogen_partners(numbers, dataset.positions, chunk=chunk)
    rows, counts = np.unique(partners, axis=0, return_counts=True)
    usual = rows[counts.argmax()]  # the partners of most frames
    moved = partners != usual
    odd = np.flatnonzero(moved.sum(axis=1) >= 2)
    if len(odd) == 0:
        return
    frame = int(odd[0])
    hydrogens = np.flatnonzero(numbers == 1)
    which = np.flatnonzero(moved[frame])
    names = ", ".join(
        f"H{hydrogens[k]} next to atom {partners[frame, k]} (usually {usual[k]})"
        for k in which[:3]
    )
    raise InputError(
        f"{dataset.source}: {len(odd)} of {len(dataset)} frames have their atoms in "
        f"another order than the others (frame {frame}: {names}); a dataset holds "
        "one atom order"
    )


def read_dataset(
    path: str | os.PathLike,
    index=None,
    format: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    label_flags: tuple[str, str, str] | None = None,
) -> Dataset:
    """Read a labelled trajectory into a :class:`Dataset` (eV, Å).

    Parameters
    ----------
    path : path
        Any trajectory ASE reads (``.xyz``, ``.extxyz``, ``.xyz.gz``, ``.traj``,
        ``.db``, ...) or an sGDML/MD17 ``.npz``, optionally with ASE's
        ``@selection``: ``data.extxyz@0:300``, ``data.traj@-10:``,
        ``data.db@id<100`` (see :func:`split_selection`).
    index : str, int or slice, optional
        Frames to read, ASE-style (default: all), when ``path`` has no
        ``@selection``. The dataset's ``source`` records the selection either way
        (``data.extxyz@0:300``).
    format : str, optional
        ASE format name, when the suffix does not tell.
    energy_key, forces_key : str, optional
        Names of the labels in ``atoms.info`` / ``atoms.arrays``.
    label_flags : (str, str, str), optional
        The flags that set those keys and an example, for the message when a
        frame has no label (default: :func:`label_options`, ``energy_key=KEY``
        from Python, ``--energy-key KEY`` in a command line).

    Raises
    ------
    InputError
        Naming the file and the problem: missing or empty file, unreadable content,
        frames without energy or forces, mixed molecules, NaN/inf values.
    """
    path, index, source = split_selection(path, index)
    if format in (None, "sgdml-npz") and path.suffix == ".npz":
        dataset = _read_npz(path, index, source)
    else:
        frames = read_frames(path, index, format=format)
        check_isolated(frames, source)
        dataset = dataset_from_frames(
            frames, source, energy_key, forces_key, label_flags
        )
    check_atom_order(dataset)
    check_force_scale(dataset)
    logger.info(
        "read %d frames of %s (%d atoms) from %s",
        len(dataset),
        dataset.formula,
        dataset.n_atoms,
        source,
    )
    return dataset


def check_force_scale(dataset: Dataset) -> float:
    """Warn (one line) when the forces are too large to be in eV/Å.

    Returns
    -------
    float
        The RMS force component in the dataset's units (eV/Å if they are right).
    """
    rms = float(np.sqrt(np.mean(dataset.forces**2)))
    if rms > MAX_FORCE_RMS:
        logger.warning(
            "%s: the RMS force component is %.1f, implausible for eV/Å (MD at 500 K "
            "gives 1-1.5 eV/Å); if energies and forces are in kcal/mol and "
            "kcal/(mol Å), convert them to eV and eV/Å (x %.5f) or save them as an "
            "sGDML .npz with e_unit='kcal/mol'",
            dataset.source,
            rms,
            units.kcal / units.mol,
        )
    return rms


def _read_npz(path: Path, index, source: str) -> Dataset:
    from .npzformat import load_npz_arrays

    _check_file(path)
    if isinstance(index, str):
        raise InputError(
            f"{source}: {index!r} is not a frame index or slice (start:stop:step)"
        )
    try:
        arrays = load_npz_arrays(path)
    except FILE_READ_ERRORS as exc:
        raise InputError(f"{path}: cannot read as sGDML/MD17 npz ({exc})") from exc
    for kind in ("energies", "forces"):
        if arrays[kind] is None:
            raise InputError(f"{path}: no {kind} in the npz")
    n_frames = len(arrays["positions"])
    if isinstance(index, int):  # one frame, as a dataset of one
        if not -n_frames <= index < n_frames:
            raise InputError(f"{source}: frame {index} of {n_frames} does not exist")
        index = slice(index, index + 1 or None)
    select = np.arange(n_frames)[index]
    if len(select) == 0:
        raise InputError(f"{source}: no frames")
    return Dataset(
        arrays["numbers"],
        arrays["positions"][select],
        arrays["energies"][select],
        arrays["forces"][select],
        source=source,
    )


@dataclass(frozen=True)
class DataFile:
    """A labelled trajectory to read later: a path and how to read it.

    The workflows (:func:`~ase_flatten.training.train_model`,
    :func:`~ase_flatten.reports.error_report`) take a :class:`Dataset`, a path,
    or this, which they read once their other inputs are checked. Parameters as
    for :func:`read_dataset`.
    """

    path: str | os.PathLike
    index: object = None
    format: str | None = None
    energy_key: str | None = None
    forces_key: str | None = None

    def read(self) -> Dataset:
        """The :class:`Dataset` (:func:`read_dataset`)."""
        return read_dataset(**vars(self))


def as_data_file(data, energy_key=None, forces_key=None) -> Dataset | DataFile:
    """``data`` as a :class:`Dataset` or :class:`DataFile`: a path becomes a
    :class:`DataFile` read with the label keys given."""
    if isinstance(data, (Dataset, DataFile)):
        return data
    if isinstance(data, (str, os.PathLike)):
        return DataFile(data, energy_key=energy_key, forces_key=forces_key)
    raise TypeError(f"data: a Dataset, a path or a DataFile, got {type(data).__name__}")


def load_data(data) -> Dataset:
    """The frames of ``data``: a :class:`Dataset`, a :class:`DataFile` or a path."""
    data = as_data_file(data)
    return data if isinstance(data, Dataset) else data.read()


def data_path(data) -> str | None:
    """The file ``data`` is read from (None for a :class:`Dataset` in memory)."""
    if isinstance(data, Dataset):
        return None
    return os.fspath(as_data_file(data).path)
