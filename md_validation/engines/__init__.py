"""MD engines: one runner interface (see :func:`md_validation.single_run.run_md`).

``ase``  ASE integrators in this process (:mod:`.ase`);
``ipi``  a real ``i-pi`` server, the model served over a UNIX socket (:mod:`.ipi`).
"""

ENGINES = ("ase", "ipi")
#: Thermostats each engine accepts ("nve": none, plain velocity Verlet).
THERMOSTATS = {
    "ase": ("langevin", "bussi", "svr", "nve"),
    "ipi": ("langevin", "bussi", "svr", "nve"),
}
