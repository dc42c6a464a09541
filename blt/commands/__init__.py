"""One module per `blt` subcommand: `add_arguments(parser)` and `run(args) -> exit code`. They only call the library."""
