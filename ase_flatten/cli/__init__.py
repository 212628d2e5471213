"""The ``ase-flatten`` command line: one module per subcommand."""
