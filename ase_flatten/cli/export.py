"""Write a model's training, validation and test frames for MACE (mace_run_train).

Reads the dataset MODEL was trained on (the path model.json records, or --data),
with the label keys it was read with, and writes DIR/train.xyz, DIR/valid.xyz and
DIR/test.xyz (extended XYZ): the frames the model trained on, validated on and
never saw (its test split), the reference labels under REF_energy (info) and
REF_forces (arrays), and why each frame is there as its config_type: `initial` or
`flatten_iterN` (`diverse_iterN`) for a `select` run, the strategy (`random`,
`fps`, ...) for `train`, `validation` and `test`. valid.xyz is left out when the
model recorded no validation frames (mace_run_train then takes --valid_fraction
of train.xyz).

example: ase-flatten export runs/flattened -o mace_data/
         mace_run_train --train_file mace_data/train.xyz \\
             --valid_file mace_data/valid.xyz --test_file mace_data/test.xyz \\
             --energy_key REF_energy --forces_key REF_forces --E0s average ...
"""

from __future__ import annotations

import argparse

from .common import add_label_key_arguments
from .runtime import add_output_arguments

description = __doc__
COMMAND = "ase-flatten export"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="model directory (ase-flatten train/select)"
    )
    add_output_arguments(parser, COMMAND)
    parser.add_argument(
        "--data", help="the dataset (default: the path recorded in MODEL)"
    )
    add_label_key_arguments(parser, recorded=True)


def run(args: argparse.Namespace) -> None:
    import json
    import os
    from pathlib import Path

    import numpy as np

    from ..data import read_dataset, write_reference_frames
    from ..exceptions import InputError
    from ..files import atomic_directory, check_output_directory
    from ..models import (
        load_model,
        recorded_dataset,
        recorded_label_keys,
    )
    from ..selection.flatten import frame_reasons

    inputs = [args.model, args.data]
    check_output_directory(args.output, COMMAND, args.overwrite, inputs)
    saved = load_model(args.model)
    keys = recorded_label_keys(saved.meta)
    data = recorded_dataset(saved, args.data)
    dataset = read_dataset(
        data,
        energy_key=args.energy_key or keys[0],
        forces_key=args.forces_key or keys[1],
    )
    fingerprint = saved.meta.get("dataset_fingerprint")
    if fingerprint and fingerprint != dataset.fingerprint():
        raise InputError(
            f"{dataset.source}: not the frames {args.model} was trained on "
            f"(fingerprint {dataset.fingerprint()}, the model records {fingerprint})"
        )
    model = Path(args.model)
    train = saved.train_indices
    test = saved.test_indices
    valid = saved.validation_indices
    for name, frames in (("training", train), ("validation", valid), ("test", test)):
        if frames is not None and len(frames) and frames.max() >= len(dataset):
            raise InputError(
                f"{args.model}: {name} frame {frames.max()} is out of range for "
                f"{dataset.source} ({len(dataset)} frames)"
            )
    history = None
    if (model / "history.json").is_file():  # a select run: why each frame
        try:
            history = json.loads((model / "history.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{model / 'history.json'}: unreadable ({exc})") from exc
        if not isinstance(history, list):
            raise InputError(f"{model / 'history.json'}: damaged (not a list)")
    reasons = (
        frame_reasons(train, history)
        if history is not None
        else str(saved.meta.get("strategy") or "train")
    )
    parts = [("train.xyz", train, reasons)]
    if valid is not None and len(valid):
        parts.append(("valid.xyz", valid, "validation"))
    if test is not None and len(test):
        parts.append(("test.xyz", test, "test"))
    with atomic_directory(args.output, COMMAND, args.overwrite, inputs) as tmp:
        for name, frames, config_type in parts:
            write_reference_frames(dataset, tmp / name, frames, config_type)
    for name, frames, config_type in parts:
        kinds = ", ".join(sorted(set(np.atleast_1d(config_type).tolist())))
        print(f"{len(frames):6d} frames -> {os.path.join(args.output, name)} ({kinds})")
    files = {name: os.path.join(args.output, name) for name, _, _ in parts}
    command = f"mace_run_train --train_file {files['train.xyz']}"
    if "valid.xyz" in files:
        command += f" --valid_file {files['valid.xyz']}"
    else:
        print("no validation frames recorded: mace_run_train splits --valid_fraction")
    if "test.xyz" in files:
        command += f" --test_file {files['test.xyz']}"
    print(f"{command} --energy_key REF_energy --forces_key REF_forces --E0s average")
