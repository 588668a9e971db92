"""Pathfinder and Path-X (Linsley et al. 2018, as in LRA): are the two marker circles connected?

Images are generated here (`drawing`: Linsley et al.'s script, with LRA's settings) or read from
the LRA release's Pathfinder folders (`release`: PNG images and their `metadata/<n>.npy` text
files). Either way `builder` stores them as flattened uint8 pixels (the tokens, vocab 256,
row-major) in an array_record TFDS dataset.
"""

from research.tasks.pathfinder.builder import (
    TASK,
    GeneratorOptions,
    Pathfinder,
    PathfinderConfig,
    builder_config,
    make_chunk,
)
from research.tasks.pathfinder.drawing import (
    GEOMETRY,
    RESOLUTIONS,
    Drawing,
    Geometry,
    draw_image,
    example_grid,
)
from research.tasks.pathfinder.release import read_png, read_release_index, split_index

__all__ = [
    "GEOMETRY",
    "RESOLUTIONS",
    "TASK",
    "Drawing",
    "GeneratorOptions",
    "Geometry",
    "Pathfinder",
    "PathfinderConfig",
    "builder_config",
    "draw_image",
    "example_grid",
    "make_chunk",
    "read_png",
    "read_release_index",
    "split_index",
]
