"""xtune's built-in plugins. Each module registers its entries through the same hooks a third party uses."""
