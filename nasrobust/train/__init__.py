"""One training engine for supernets, stand-alone networks and fine-tuning."""

from nasrobust.train.recipe import PRESETS, Recipe, SandwichConfig, get_preset

__all__ = ["PRESETS", "Recipe", "SandwichConfig", "get_preset"]
