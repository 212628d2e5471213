"""i-PI's files: the NVT input XML we write, the properties and xyz it writes."""

from __future__ import annotations

import re
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from ase import Atoms

from ..result import COLUMNS

#: i-PI properties we ask for, and the record column each one fills.
PROPERTIES = {
    "step": "step",
    "time{picosecond}": "time_ps",
    "conserved{electronvolt}": "conserved_eV",
    "temperature{kelvin}": "temperature_K",
    "potential{electronvolt}": "potential_eV",
    "kinetic_md{electronvolt}": "kinetic_eV",
}
PREFIX = "ipi"
PROPERTIES_FILE = f"{PREFIX}.out"
TRAJECTORY_FILE = f"{PREFIX}.pos_0.xyz"


def input_xml(
    *,
    address: str,
    start_file: str,
    temperature_K: float,
    n_steps: int,
    timestep_fs: float,
    seed: int,
    thermostat: str,
    tau_fs: float,
    stride: int,
    latency_s: float = 1e-4,
) -> str:
    """The i-PI input for an NVT run of one molecule served over a UNIX socket.

    Parameters
    ----------
    address : str
        Socket name; i-PI opens ``/tmp/ipi_<address>``.
    start_file : str
        extxyz file of the starting frame (read with ``<file mode='ase'>``).
    thermostat : {"svr", "bussi", "langevin", "nve"}
        ``bussi`` is i-PI's ``svr``; ``nve`` runs without a thermostat.
    """
    if thermostat == "nve":
        dynamics = (
            "<dynamics mode='nve'>\n"
            f"        <timestep units='femtosecond'> {timestep_fs} </timestep>\n"
            "      </dynamics>"
        )
    else:
        mode = "svr" if thermostat in ("svr", "bussi") else thermostat
        dynamics = (
            "<dynamics mode='nvt'>\n"
            f"        <timestep units='femtosecond'> {timestep_fs} </timestep>\n"
            f"        <thermostat mode='{mode}'>\n"
            f"          <tau units='femtosecond'> {tau_fs} </tau>\n"
            "        </thermostat>\n"
            "      </dynamics>"
        )
    properties = ", ".join(PROPERTIES)
    return f"""<simulation verbosity='low'>
  <output prefix='{PREFIX}'>
    <properties stride='1' filename='out' flush='1'> [ {properties} ] </properties>
    <trajectory filename='pos' stride='{stride}' format='xyz' cell_units='angstrom'
                flush='1'> positions{{angstrom}} </trajectory>
  </output>
  <total_steps> {n_steps} </total_steps>
  <prng><seed> {seed} </seed></prng>
  <ffsocket name='model' mode='unix' pbc='false'>
    <address> {escape(address)} </address>
    <latency> {latency_s} </latency>
  </ffsocket>
  <system>
    <initialize nbeads='1'>
      <file mode='ase'> {escape(start_file)} </file>
      <velocities mode='thermal' units='kelvin'> {temperature_K} </velocities>
    </initialize>
    <forces><force forcefield='model'/></forces>
    <ensemble><temperature units='kelvin'> {temperature_K} </temperature></ensemble>
    <motion mode='dynamics'>
      {dynamics}
    </motion>
  </system>
</simulation>
"""


_COLUMN = re.compile(r"#\s*(?:column|cols\.)\s+(\d+)(?:-(\d+))?\s+-->\s+(\S+)")


def read_properties(path: str | Path) -> dict[str, np.ndarray]:
    """Parse an i-PI properties file into a record (:data:`~..result.COLUMNS`)."""
    names, rows = {}, []
    with open(path) as handle:
        for line in handle:
            if line.startswith("#"):
                match = _COLUMN.match(line)
                if match:
                    names[match.group(3)] = int(match.group(1)) - 1
                continue
            values = line.split()
            if values and len(values) >= len(names):
                rows.append([float(v) for v in values])
    width = max(names.values(), default=-1) + 1
    data = np.array(rows, dtype=float).reshape(len(rows), -1 if rows else width)
    missing = [name for name in PROPERTIES if name not in names]
    if missing:
        raise ValueError(f"{path}: i-PI properties without {', '.join(missing)}")
    record = {
        PROPERTIES[name]: data[:, col]
        for name, col in names.items()
        if name in PROPERTIES
    }
    record["total_eV"] = record["potential_eV"] + record["kinetic_eV"]
    return {name: record[name] for name in COLUMNS}


_STEP = re.compile(r"Step:\s*(\d+)")


def read_xyz_trajectory(path: str | Path) -> list[Atoms]:
    """Read i-PI's xyz trajectory (positions in Å); ``info['step']`` per frame."""
    frames = []
    with open(path) as handle:
        lines = handle.read().splitlines()
    k = 0
    while k < len(lines) and lines[k].strip():
        n = int(lines[k])
        comment = lines[k + 1]
        block = [line.split() for line in lines[k + 2 : k + 2 + n]]
        if len(block) < n:
            break  # a frame cut short by a stopped server
        atoms = Atoms(
            symbols=[b[0] for b in block],
            positions=[[float(x) for x in b[1:4]] for b in block],
        )
        match = _STEP.search(comment)
        atoms.info["step"] = int(match.group(1)) if match else len(frames)
        frames.append(atoms)
        k += 2 + n
    return frames
