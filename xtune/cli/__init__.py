"""The `xtune` command line: one module per subcommand, each with `add_parser(subparsers, common)`.

Subcommand modules import only the standard library and xtune's light modules at the top; anything
heavy (torch, transformers, mmengine) is imported inside the function that runs the command.
"""
