"""YAML recipes for a whole model family: the safe loader, its schema, and the bundled recipes.

Entry points: :func:`specprobe.recipes.recipe.load_recipe` (a file or a bundled name →
a validated :class:`~specprobe.recipes.schema.Recipe`; ``Recipe.to_plan()`` is the sweep),
:func:`~specprobe.recipes.recipe.with_overrides` (the command line's overrides),
:func:`~specprobe.recipes.recipe.check_recipe` (``specprobe validate``). The parts:
:mod:`.schema`, :mod:`.loader` (includes, variables, the safe YAML loader),
:mod:`.revisions` (revision lists and generators); the YAML files are in ``bundled/``.
"""
