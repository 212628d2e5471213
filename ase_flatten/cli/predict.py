"""Predict energies and forces of frames with a saved model, with its error estimate.

Writes FILE (extended XYZ): every frame of DATA as it was, with the model's energy
in info[`flattened_energy`] and forces in arrays[`flattened_forces`] (--prefix
changes ``flattened_``; MACE's mace_eval_configs writes `MACE_energy` the same way),
and in its info the model's path (`model`) and the frame's position in DATA
(`frame`). For a model saved with its data's clusters (`ase-flatten train`
and `select` save them) the info also holds what FlattenedCalculator(DIR,
domain=True) reports: the frame's `cluster`, the model's measured force RMSE on
that cluster (`cluster_force_rmse`, eV/Å; NaN where none was measured), the
distance to the nearest frame of the data (`domain_distance`, Å; QUESTS' dH in
nats for a model trained with --domain quests) and whether that lies beyond the
model's threshold (`outside_domain`).

DATA needs no labels; reference energies and forces it holds stay under their own
names (a calculator's `energy=`/`forces`, or keys such as `REF_energy`). Frames
are predicted in batches. `ase-flatten errors DATA --predicted FILE
--pred-energy-key flattened_energy --pred-forces-key flattened_forces` reads the
predictions back.

example: ase-flatten predict md_frames.extxyz --model models/default -o out.extxyz
"""

from __future__ import annotations

import argparse
import logging
import re

from .common import positive_int

description = __doc__
logger = logging.getLogger(__name__)

#: the default --prefix of the predicted energy and forces' keys
PREFIX = "flattened_"


def prefix_arg(text: str) -> str:
    """argparse type: a prefix that makes plain extxyz keys (``MACE_``)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise argparse.ArgumentTypeError(
            f"must be letters, digits or _ (a key prefix such as MACE_), got {text!r}"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        metavar="DATA",
        help="frames of the model's molecule: any ASE-readable file, labelled or "
        "not; DATA@0:300 reads some of them",
    )
    parser.add_argument(
        "--index", help="frames to read, ASE-style (default: all); as DATA@SELECTION"
    )
    parser.add_argument(
        "--format", help="ASE format of DATA when its suffix is unusual"
    )
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="model directory to predict with"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="output .extxyz / .xyz"
    )
    parser.add_argument(
        "--prefix",
        type=prefix_arg,
        default=PREFIX,
        help="the predictions go to info[PREFIX + 'energy'] and "
        f"arrays[PREFIX + 'forces'] (default: the keys {PREFIX}energy and "
        f"{PREFIX}forces)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="frames per model call (default: the backend's)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output"
    )


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np

    from ..data import split_selection
    from ..exceptions import InputError
    from ..files import check_output_file
    from ..models import load_model

    if Path(args.output).suffix not in (".extxyz", ".xyz"):
        raise InputError(f"{args.output}: the output must be an .extxyz or .xyz file")
    data_file = split_selection(args.data, args.index)[0]
    check_output_file(args.output, args.overwrite, inputs=[data_file, args.model])
    saved = load_model(args.model)
    frames, source = _read_frames(args, saved)
    positions = np.stack([atoms.positions for atoms in frames])
    energies, forces = _predict(saved, positions, source, args.batch_size)
    extras = _locate(saved, positions, energies)
    _write(args.output, frames, energies, forces, extras, saved, args.prefix)
    _print_summary(len(frames), saved, extras, args.output, args.prefix)


def _read_frames(args, saved):
    """Frames of DATA, each checked as FlattenedCalculator checks a structure."""
    from ase.calculators.calculator import CalculationFailed, CalculatorSetupError

    from ..calculator import FlattenedCalculator
    from ..data import read_frames, split_selection
    from ..exceptions import InputError

    source = split_selection(args.data, args.index)[2]
    frames = read_frames(args.data, args.index, format=args.format)
    calc = FlattenedCalculator(saved)
    energy_key, forces_key = f"{args.prefix}energy", f"{args.prefix}forces"
    for i, atoms in enumerate(frames):
        try:
            calc.check_structure(atoms)
        except (CalculatorSetupError, CalculationFailed) as exc:
            raise InputError(f"{source}: frame {i}: {exc}") from exc
        taken = energy_key if energy_key in atoms.info else None
        taken = taken or (forces_key if forces_key in atoms.arrays else None)
        if taken:
            raise InputError(
                f"{source}: frame {i} already has {taken!r} (predicted before?); "
                "give another --prefix so that both stay"
            )
    _warn_size(saved, frames, source)
    return frames, source


def _warn_size(saved, frames, source) -> None:
    """One warning for frames far outside the training data's distance range."""
    import numpy as np

    from ..geometry import distance_extremes

    limits = saved.distance_range
    if limits is None:
        return
    shortest, longest = distance_extremes(np.stack([a.positions for a in frames]))
    outside = np.flatnonzero(~limits.inside(shortest, longest))
    if len(outside):
        i = int(outside[0])
        logger.warning(
            "%s: %d of %d frames lie far outside the model's training data (frame "
            "%d: %s); their predictions are extrapolations",
            source,
            len(outside),
            len(frames),
            i,
            limits.describe(shortest[i], longest[i]),
        )


def _predict(saved, positions, source, batch_size):
    """Energies (M,) and forces (M, N, 3) from the backend, in batches."""
    import numpy as np

    from ..data import Dataset

    # Backend.predict batches the frames of a Dataset; these frames need no labels,
    # so the Dataset carries zeros that nothing reads.
    frames = Dataset(
        saved.backend.numbers_,
        positions,
        np.zeros(len(positions)),
        np.zeros_like(positions),
        source=source,
    )
    return saved.backend.predict(frames, batch_size=batch_size)


def _locate(saved, positions, energies):
    """The frames' place in the model's error map (``SavedModel.locate``); None
    for a model saved without its data's clusters."""
    if saved.clusters is None:
        logger.warning(
            "%s: saved without its data's clusters: no cluster, error estimate or "
            "domain flag per frame",
            saved.path,
        )
        return None
    return saved.locate(positions, energies)


def _write(path, frames, energies, forces, extras, saved, prefix=PREFIX) -> None:
    """The frames as they were plus the model's energy and forces, atomically."""
    from pathlib import Path

    import ase.io
    from ase.calculators.calculator import all_properties
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..files import atomic_path

    model = str(Path(saved.path).resolve())
    out = []
    for i, atoms in enumerate(frames):
        frame = atoms.copy()  # keeps the input's info and arrays, not its calculator
        if atoms.calc is not None and atoms.calc.results:  # reference labels stay
            results = {
                k: v for k, v in atoms.calc.results.items() if k in all_properties
            }
            frame.calc = SinglePointCalculator(frame, **results)
        frame.info[f"{prefix}energy"] = float(energies[i])
        frame.arrays[f"{prefix}forces"] = forces[i].copy()
        frame.info.update(model=model, frame=i)
        if extras is not None:
            frame.info.update(extras.row(i))
        out.append(frame)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, out, format="extxyz")


def _print_summary(n_frames, saved, extras, output, prefix=PREFIX) -> None:
    import numpy as np

    print(
        f"predicted {n_frames} frames with the {saved.backend.name} model "
        f"{saved.path} -> {output} ({prefix}energy, {prefix}forces)"
    )
    if extras is None:
        return
    rmse = extras.cluster_force_rmse
    worst = f"{np.nanmax(rmse):.4f} eV/Å" if np.isfinite(rmse).any() else "unmeasured"
    print(
        f"{int(extras.outside_domain.sum())} of {n_frames} outside the model's "
        f"domain; largest measured cluster force RMSE among them: {worst}"
    )
