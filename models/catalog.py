"""The names of the registered methods and input modalities, importable without torch.

The command line builds its help and checks a method name from here, so ``duoscan --help`` and the commands that
never score a frame start in well under a second. ``base.register`` refuses a method missing from this list, and
the package loads a method's module only when the registry is first used."""

from __future__ import annotations

# the module under duoscan.models that defines and registers each method
METHODS = ("baseline", "bridgenet", "btf", "cmdr", "mafr", "patchcore")

# modality -> the frame inputs a model trained on it reads
MODALITIES = {"rgb": ("rgb",), "xyz": ("xyz",), "both": ("rgb", "xyz")}
