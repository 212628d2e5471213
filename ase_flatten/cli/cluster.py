"""Cluster a dataset by geometry (Ward) and energy (KMeans).

Writes an npz with one integer label per frame (`labels`), the geometry and energy
sub-labels (`geometry_labels`, `energy_labels`), the fitted model, the dataset's
fingerprint and atomic numbers. Pass it to `ase-flatten errors --clusters` to reuse
the clustering, on these frames or on any other frames of the molecule (assigned).

example: ase-flatten cluster traj.xyz -o clusters.npz
"""

from __future__ import annotations

import argparse
import logging

from .common import add_clustering_arguments, add_dataset_arguments

description = __doc__
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="output .npz"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output"
    )
    add_clustering_arguments(parser)


def run(args: argparse.Namespace) -> None:
    import numpy as np

    from ..clustering import save_clusters
    from ..exceptions import InputError
    from ..files import check_output_file
    from .common import clusters_meta, fit_clusters, read_dataset_arg

    if not args.output.endswith(".npz"):
        raise InputError(f"{args.output}: the output must be an .npz file")
    check_output_file(args.output, args.overwrite, inputs=[args.data])
    dataset = read_dataset_arg(args)
    model = fit_clusters(dataset, args)
    save_clusters(args.output, model, **clusters_meta(dataset, args))
    sizes = np.bincount(model.labels_)
    print(
        f"{len(dataset)} frames in {model.n_clusters_} clusters "
        f"(sizes {sizes.min()}-{sizes.max()}, median {int(np.median(sizes))}) "
        f"-> {args.output}"
    )
