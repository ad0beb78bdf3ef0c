"""Sub-commands of the ``gfldet`` CLI: each module has ``add_arguments(parser)`` and ``run(args) -> int``."""
