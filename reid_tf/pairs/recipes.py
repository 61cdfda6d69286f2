"""The recipes by name (config.RECIPES): the one place a recipe's name turns into its object."""
from __future__ import annotations

from reid_tf import config
from reid_tf.pairs.common import Recipe
from reid_tf.pairs.cross_camera import CROSS_CAMERA
from reid_tf.pairs.shifted_copies import SHIFTED_COPIES

RECIPES: dict[str, Recipe] = {r.name: r for r in (CROSS_CAMERA, SHIFTED_COPIES)}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """The Recipe of a name of config.RECIPES (a Recipe is returned as it is); ValueError otherwise."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(config.RECIPES)}")
    return RECIPES[recipe]
