"""The `slimline` command: a package of command modules, each a thin layer over slimline.api."""
