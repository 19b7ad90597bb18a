"""The shape of a region's combination tree: layers combined in groups, then the groups.

A deep session stacks thousands of layers (SDS batch mosaics) on one region. Combined in
one task, the stack of every layer fits a task's memory only a few rows at a time, and each
band of rows reads every layer again: the reads grow as the square of the layers (2,560
layers on one region: 30,720 reads, 122 s, on one worker while the others idle).
Combined as a tree whose nodes each take at most ``fan_in`` inputs, every layer is read by
one group task in a few bands, the groups run in parallel, and the next level combines
the groups' results the same way (coverage-weighted, with the same rejection) until one
node is left, which writes the region.

The tree depends only on the number of layers and ``fan_in`` (a configuration value), so
the same plan always combines the same layers in the same groups.
"""

from __future__ import annotations

__all__ = ["layer_tree"]


def layer_tree(n_layers: int, fan_in: int) -> list[list[range]]:
    """The levels of a combination tree over ``n_layers`` inputs.

    Parameters
    ----------
    n_layers : int
        Layers reaching the region.
    fan_in : int
        Most inputs one node combines; below 2 (or not above it) the tree is one node.

    Returns
    -------
    list of list of range
        Level 0 groups the layers, level ``k`` groups the nodes of level ``k - 1`` (each
        range indexes the level below); the last level holds one node over everything
        below it. Groups of a level differ in size by at most one, and keep the order of
        their inputs.

    Examples
    --------
    >>> layer_tree(5, 64)
    [[range(0, 5)]]
    >>> layer_tree(130, 64)
    [[range(0, 43), range(43, 87), range(87, 130)], [range(0, 3)]]
    """
    n = max(0, int(n_layers))
    levels: list[list[range]] = []
    if fan_in >= 2:
        while n > fan_in:
            groups = -(-n // fan_in)
            bounds = [round(k * n / groups) for k in range(groups + 1)]
            levels.append([range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
            n = groups
    levels.append([range(n)])
    return levels
