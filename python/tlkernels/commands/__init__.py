"""The subcommands of the ``tlkernels`` command that are not experiment modules of their own.

Every subcommand, here or in ``tlkernels.experiments``, registers itself the same way: its module
has ``add_parser(subparsers)``, which adds the subcommand(s) with ``set_defaults(func=...)``;
``tlkernels.cli.COMMANDS`` lists the modules. Shared arguments and outputs: ``commands.common``.
"""
