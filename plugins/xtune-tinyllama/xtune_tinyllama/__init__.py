"""xtune-tinyllama: a reference third-party plugin for xtune."""
