"""xtune: fine-tune large language models from readable, plugin-provided recipes.

Importing the package stays cheap (no torch, no transformers): the CLI and `list-cfg` depend on it.
"""

__version__ = "0.1.0"
