"""Reader for sGDML / MD17 ``.npz`` datasets, usable from ``ase.io.read``.

Registered through the ``ase.io.formats`` entry point as format ``sgdml-npz``::

    frames = ase.io.read("ethanol.npz", ":", format="sgdml-npz")

Both layouts in use are understood:

* sGDML / MD17 (``R``, ``z``, ``E``, ``F``, optional ``e_unit`` / ``r_unit``);
* revised MD17 (``coords``, ``nuclear_charges``, ``energies``, ``forces``; kcal/mol, Å).

Energies and forces are converted to eV and eV/Å. Files without unit fields follow the
sGDML convention (kcal/mol and Å), as sGDML's own ASE calculator does.

This module must not import anything else from ``ase_flatten``: ASE imports it while
it builds its format table, and a circular import would disable the format silently.
"""

import logging

import numpy as np
from ase import units

logger = logging.getLogger(__name__)

ENERGY_UNITS = {
    "kcal/mol": units.kcal / units.mol,
    "kj/mol": units.kJ / units.mol,
    "ev": 1.0,
    "ha": units.Hartree,
    "hartree": units.Hartree,
    "eh": units.Hartree,
    "au": units.Hartree,
    "mev": 1e-3,
}
LENGTH_UNITS = {
    "ang": 1.0,
    "a": 1.0,
    "angstrom": 1.0,
    "bohr": units.Bohr,
    "au": units.Bohr,
    "nm": 10.0,
}
LAYOUTS = (
    ("R", "z", "E", "F"),  # sGDML / MD17
    ("coords", "nuclear_charges", "energies", "forces"),  # revised MD17
)


def _unit(npz, key: str, table: dict, default: str) -> tuple[float, str]:
    if key not in npz:
        return table[default.lower()], default
    name = str(np.asarray(npz[key]).reshape(-1)[0])
    try:
        return table[name.lower()], name
    except KeyError as exc:
        known = ", ".join(sorted(table))
        raise ValueError(f"unknown {key} {name!r} (known: {known})") from exc


def load_npz_arrays(file) -> dict[str, np.ndarray]:
    """Read an sGDML/MD17 npz into arrays in eV and Å.

    Parameters
    ----------
    file : str, path or binary file object
        The ``.npz`` file.

    Returns
    -------
    dict
        ``numbers`` (N,), ``positions`` (M, N, 3), ``energies`` (M,) or None,
        ``forces`` (M, N, 3) or None.

    Raises
    ------
    ValueError
        If the file holds none of the known layouts or an unknown unit.
    """
    with np.load(file, allow_pickle=False) as npz:
        layout = next((k for k in LAYOUTS if k[0] in npz and k[1] in npz), None)
        if layout is None:
            raise ValueError(
                f"not an sGDML/MD17 dataset: keys {sorted(npz.files)}, expected "
                "R, z, E, F (sGDML) or coords, nuclear_charges, energies, forces "
                "(rMD17)"
            )
        r_key, z_key, e_key, f_key = layout
        e_scale, e_name = _unit(npz, "e_unit", ENERGY_UNITS, "kcal/mol")
        r_scale, _ = _unit(npz, "r_unit", LENGTH_UNITS, "Ang")
        if "e_unit" not in npz:
            logger.warning("no e_unit in npz: assuming kcal/mol (sGDML convention)")
        positions = np.asarray(npz[r_key], dtype=float) * r_scale
        energies = forces = None
        if e_key in npz:
            energies = np.asarray(npz[e_key], dtype=float).reshape(-1) * e_scale
        if f_key in npz:
            # forces are energy / length
            forces = np.asarray(npz[f_key], dtype=float) * (e_scale / r_scale)
        numbers = np.asarray(npz[z_key], dtype=int).reshape(-1)
    logger.debug("read npz with energy unit %s", e_name)
    return {
        "numbers": numbers,
        "positions": positions,
        "energies": energies,
        "forces": forces,
    }


def read_sgdml_npz(fileobj, index=-1):
    """ASE reader: yield :class:`ase.Atoms` with energy and forces (eV, eV/Å)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    arrays = load_npz_arrays(fileobj)
    n_frames = len(arrays["positions"])
    frames = range(n_frames)[index] if isinstance(index, slice) else [index]
    for i in frames:
        atoms = Atoms(numbers=arrays["numbers"], positions=arrays["positions"][i])
        results = {}
        if arrays["energies"] is not None:
            results["energy"] = float(arrays["energies"][i])
        if arrays["forces"] is not None:
            results["forces"] = arrays["forces"][i].copy()
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        yield atoms


def _entry_point():
    # Kept in a function so that importing this module stays cheap and safe.
    from ase.utils.plugins import ExternalIOFormat

    return ExternalIOFormat(
        desc="sGDML / MD17 dataset (npz)",
        code="+B",
        module="ase_flatten.npzformat",
        ext="npz",
    )


try:
    npz_format = _entry_point()
except ImportError:  # an ASE without the plugin API: the format is simply absent
    npz_format = None
