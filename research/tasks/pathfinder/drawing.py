"""Drawing one Pathfinder image: two target contours, distractors and two markers.

The generator draws as Linsley et al.'s script (github.com/drewlinsley/pathfinder, snakes2.py)
does, with the settings LRA's builder records per size (GEOMETRY). A contour is a chain of
`contour_length` short straight dashes ("paddles"), 2 * margin apart, so only their good
continuation links them. It grows pivot by pivot (pivots paddle_length + 2 * margin apart, a
paddle filling each link but `margin` at its ends): the next link turns by an angle drawn with
weight cos^2(min(continuity * |turn|, pi/2)) among the turns (one per pixel of arc) whose link
stays clear of everything drawn. Two target contours start `seed_distance` apart near the centre
and grow a link each in turn; the image is redrawn until both fit. Distractor contours of a
third of their length follow; one marker disc sits on the start of target A and one on the far
end of A (label 1) or of B (label 0). Paddles (flat-ended rectangles) and markers are sampled at
SUPERSAMPLE^2 points per pixel: the image is their anti-aliased coverage in grayscale.

Each link stays `2 * margin + thickness` (centre line to centre line) from the links of other
contours and from the non-adjacent links of its own, and the markers keep clear of other
contours. So the label is exactly "the markers lie on one contour", and `Drawing.paddles` gives
what an independent check needs: redraw the contours without gaps and flood-fill from a marker.
Which places are taken is kept on a raster of 1 / CELLS_PER_PIXEL pixel cells (each link marks
the cells within its clearance), and redraws run in batches in lockstep, so that a 32 x 32 image
takes a few milliseconds although most attempts at the larger sizes do not fit.
"""

import dataclasses
import functools
import math

import numpy as np

from research.errors import UserError

RESOLUTIONS = (32, 64, 128)
SUPERSAMPLE = 4  # points per pixel and axis at which coverage is sampled: anti-aliasing
# Cells per pixel of the raster that tracks which places are taken (clearances hold up to 2 cells).
CELLS_PER_PIXEL = {32: 4, 64: 2, 128: 2}
DIRECTIONS = 360  # link directions: whole degrees, as in the original
SEED_TRIES = 16  # random (start, direction) pairs tried at once for a contour's first paddle
DISTRACTOR_TRIES = 5  # LRA's script redraws a failed distractor up to 4 times, then leaves it out
MAX_ATTEMPTS = 5000  # redraws of the target contours before giving up on an image
MAX_BATCH = 128  # redraws tried at once (batches grow 4-fold from 8 up to this)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """LRA's settings of Linsley et al.'s script for one image size (lengths in pixels).

    paddle_length: length of one paddle (dash).
    margins: the margin, drawn once per image from these; consecutive paddles of a contour are
      2 * margin apart (pivot to pivot: paddle_length + 2 * margin).
    thickness: paddle width.
    marker_radius: radius of the marker discs.
    seed_distance: distance between the starts of the two target contours; target A starts at
      least 2 * seed_distance from the border, i.e. near the centre.
    continuity: larger values favour straighter contours; turns beyond pi / (2 * continuity)
      are never taken.
    distractor_paddles: paddles in distractor contours: distractor_paddles // d contours of
      d = contour_length // 3 paddles (LRA: 20 // 4 = 5 of 4 paddles at 32 x 32).
    contrast: paddle brightness relative to the markers' (LRA's snake and paddle contrasts);
      paddles are drawn at contrast * coverage, clipped to white.
    padding: paddles stay this far inside the border.
    """

    paddle_length: float
    margins: tuple[int, ...]
    thickness: float
    marker_radius: float
    seed_distance: float
    continuity: float
    distractor_paddles: int
    contrast: float
    padding: float = 1.0

    def clearance(self, margin: int) -> float:
        """Least distance between the centre lines of links of different contours (and of
        non-adjacent links of one): paddles 2 * margin apart edge to edge."""
        return 2 * margin + self.thickness

    def marker_clearance(self, margin: int) -> float:
        """Least distance from a marker's centre to the centre line of another contour's link."""
        return self.marker_radius + self.thickness / 2 + margin


# From the docstrings of LRA's Pathfinder builders (lra_benchmarks/data/pathfinder.py), which list
# the script's arguments they changed; paddle_length 5 at 64 and 128 is the script's default.
GEOMETRY = {
    32: Geometry(2.0, (1,), 0.5, 1.5, 7.0, 1.0, 20, 1.5),
    64: Geometry(5.0, (1,), 1.0, 2.5, 12.0, 1.8, 22, 0.8),
    128: Geometry(5.0, (2, 3), 1.5, 3.0, 20.0, 1.8, 35, 0.9),
}


def _unit(degrees: np.ndarray) -> np.ndarray:
    """directions_K2: (row, column) unit vectors at `degrees` from the column axis."""
    radians = np.radians(degrees)
    return np.stack([np.sin(radians), np.cos(radians)], axis=-1)


def _distances(points_K2: np.ndarray, starts_N2: np.ndarray, ends_N2: np.ndarray) -> np.ndarray:
    """distances_KN from points to segments (a segment with start = end is a point)."""
    span = ends_N2 - starts_N2
    length2 = np.maximum((span * span).sum(-1), 1e-12)
    offset = points_K2[:, None] - starts_N2
    along = np.clip((offset * span).sum(-1) / length2, 0.0, 1.0)
    return np.linalg.norm(offset - along[..., None] * span, axis=-1)


@dataclasses.dataclass(frozen=True)
class _Stencils:
    """The raster of one (size, margin): cells of 1 / cells_per_pixel pixels in a frame wide
    enough that no lookup leaves the grid, and what a step of a contour looks up and marks.

    Cell offsets are flat indices relative to a link's start cell, one row per direction
    (degrees), padded by repeating an entry. A contour turns by one of turns_OK[o] (degrees) for
    a random o, with prior weights_OK[o].

    steps_D: a link's end cell (the next pivot) minus its start cell.
    paths_DP: the cells a link passes through (all must be free for it to fit).
    zones_DZ: the cells within its clearance of a link (plus a cell's slack), marked taken.
    marker_zone_Z: the cells within a marker's clearance (plus two cells' slack) of its centre.
    blank_C: the raster of an empty image: 1 outside the padded image, else 0.
    own_DOKP: whether path cell p of a link turning by turns[o, k] after a link in direction d
      lies in that previous link's zone (which the new link may share).
    """

    cells_per_pixel: int
    frame: int
    width: int
    steps: np.ndarray
    paths: np.ndarray
    zones: np.ndarray
    marker_zone: np.ndarray
    blank: np.ndarray
    turns: np.ndarray
    weights: np.ndarray
    own: np.ndarray


def _within(cells_N2: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """within_N: whether cell centres (offsets from a start cell) lie within `radius` cells of
    the segment from the start cell's centre to `end` (2,); one test for marking and exempting."""
    return (
        _distances(cells_N2.astype(float), np.zeros((1, 2)), end[None].astype(float))[:, 0]
        <= radius
    )


def _zone(end: np.ndarray, radius: float, width: int) -> np.ndarray:
    """Flat offsets of the cells within `radius` cells of the segment from 0 to `end`."""
    r = math.ceil(radius + np.abs(end).max())
    cells = np.mgrid[-r : r + 1, -r : r + 1].reshape(2, -1).T
    cells = cells[_within(cells, end, radius)]
    return cells[:, 0] * width + cells[:, 1]


def _pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """rows_RL: ragged rows padded to one length by repeating their first entry."""
    length = max(len(row) for row in rows)
    return np.stack([np.concatenate([row, np.full(length - len(row), row[0])]) for row in rows])


def _turns(geometry: Geometry, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """(turns_OK, weights_OK): the candidate turns in whole degrees for each random offset o, one
    per pixel of arc at the paddle's far end as in the original, and their weights
    cos^2(min(continuity * |turn|, pi/2)) (0 beyond pi / (2 * continuity))."""
    stride = max(1, round(math.degrees(1 / (geometry.paddle_length + margin))))
    max_turn = 90 / geometry.continuity
    count = math.ceil(2 * max_turn / stride)
    turns = np.arange(stride)[:, None] + stride * np.arange(count) - round(max_turn)
    angle = np.minimum(geometry.continuity * np.radians(np.abs(turns)), math.pi / 2)
    return turns, np.cos(angle) ** 2


def _blank(resolution: int, padding: float, cells_per_pixel: int, frame: int) -> np.ndarray:
    """blank_C: the flat raster of an empty image, 1 where a cell's centre is off the padded
    image (within `padding` of the border or beyond it), else 0."""
    width = resolution * cells_per_pixel + 2 * frame
    first = frame + math.ceil((padding + 0.5) * cells_per_pixel - 0.5)
    last = frame + math.floor((resolution - 0.5 - padding) * cells_per_pixel - 0.5)
    blank = np.ones((width, width), np.int8)
    blank[first : last + 1, first : last + 1] = 0
    return blank.reshape(-1)


def _own(
    path_cells_DP2: np.ndarray, deltas_D2: np.ndarray, turns_OK: np.ndarray, reach: float
) -> np.ndarray:
    """own_DOKP: whether path cell p of a link turning by turns[o, k] after a link in direction d
    lies within `reach` of that link, i.e. in its zone (tested as the zones are made)."""
    own = []
    for direction, delta in enumerate(deltas_D2):
        after = path_cells_DP2[(direction + turns_OK) % DIRECTIONS] + delta  # relative to its start
        own.append(_within(after.reshape(-1, 2), delta, reach).reshape(after.shape[:-1]))
    return np.stack(own)


@functools.cache
def _stencils(resolution: int, margin: int) -> _Stencils:
    """The raster offsets for one size and margin (computed once per process)."""
    geometry = GEOMETRY[resolution]
    f = CELLS_PER_PIXEL[resolution]
    link = (geometry.paddle_length + 2 * margin) * f
    # A candidate link is looked up at points under 0.53 cell apart: each of its points is within
    # 0.27 cell of one, so within 1 cell of that one's cell centre: a cell of slack keeps the
    # clearance (two for a marker, whose centre is moved up to 0.71 cell to its cell's).
    reach = geometry.clearance(margin) * f + 1
    frame = math.ceil(link + reach) + 2
    width = resolution * f + 2 * frame
    deltas = np.rint(link * _unit(np.arange(DIRECTIONS))).astype(int)
    along = np.linspace(0.0, 1.0, 2 * math.ceil(link) + 1)[:, None]
    path_cells = np.rint(along * deltas[:, None]).astype(int)  # D, P, 2
    turns, weights = _turns(geometry, margin)
    return _Stencils(
        cells_per_pixel=f,
        frame=frame,
        width=width,
        steps=deltas @ (width, 1),
        paths=path_cells @ (width, 1),
        zones=_pad_rows([_zone(delta, reach, width) for delta in deltas]),
        marker_zone=_zone(np.zeros(2, int), geometry.marker_clearance(margin) * f + 2, width),
        blank=_blank(resolution, geometry.padding, f, frame),
        turns=turns,
        weights=weights,
        own=_own(path_cells, deltas, turns, reach),
    )


@dataclasses.dataclass
class _Contours:
    """One growing contour in each of B scenes: pivots (flat cells, each (B,); each link joins
    two, a paddle fills a link but its ends) and each link's direction (degrees, each (B,)); a
    scene that met a dead end keeps its last pivot."""

    pivots: list[np.ndarray]
    directions: list[np.ndarray]


class _Scenes:
    """B images drawn in lockstep, so that redrawing until the targets fit costs little.

    Each has a raster counting how many objects' clearance zones cover each cell (cells outside
    the padded image count as covered): a link fits where all its cells are 0.
    """

    def __init__(self, resolution: int, margin: int, taken_BC: np.ndarray):
        self.size = resolution
        self.geometry = GEOMETRY[resolution]
        self.margin = margin
        self.stencils = _stencils(resolution, margin)
        self.taken = taken_BC
        self.flat = taken_BC.reshape(-1)
        self.base = np.arange(len(taken_BC)) * taken_BC.shape[1]

    @classmethod
    def blank(cls, resolution: int, margin: int, count: int) -> "_Scenes":
        """`count` empty images."""
        return cls(resolution, margin, np.tile(_stencils(resolution, margin).blank, (count, 1)))

    def select(self, index: int) -> "_Scenes":
        """Scene `index` alone (B = 1), to go on with."""
        return _Scenes(self.size, self.margin, self.taken[index : index + 1].copy())

    def cells(self, points: np.ndarray) -> np.ndarray:
        """cells_...: the flat cell holding each (row, column) point (..., 2)."""
        f, frame = self.stencils.cells_per_pixel, self.stencils.frame
        grid = np.floor((points + 0.5) * f).astype(int) + frame
        return grid[..., 0] * self.stencils.width + grid[..., 1]

    def points(self, cells: np.ndarray) -> np.ndarray:
        """points_...2: (row, column) pixel coordinates of the cells' centres."""
        f, frame = self.stencils.cells_per_pixel, self.stencils.frame
        rows, columns = np.divmod(np.asarray(cells), self.stencils.width)
        return (np.stack([rows, columns], axis=-1) - frame + 0.5) / f - 0.5

    def mark(self, scenes: np.ndarray, starts: np.ndarray, directions: np.ndarray) -> None:
        """Marks the zone of one link in each of `scenes` (start cells, directions alike); one
        link per scene and call, so that overlapping zones count twice."""
        origins = self.base[scenes] + starts
        self.flat[origins[:, None] + self.stencils.zones[directions]] += 1

    def mark_markers(self, centres_M2: np.ndarray) -> None:
        """Marks the markers' zones (B = 1)."""
        for cell in self.cells(centres_M2):
            self.flat[cell + self.stencils.marker_zone] += 1

    def start(
        self, rng: np.random.Generator, tips_BK2: np.ndarray, where_B: np.ndarray
    ) -> tuple[_Contours, np.ndarray]:
        """(contours, started_B): in each scene `where_B` holds, a contour whose first paddle
        starts at the first of its K tips where it fits, in a uniformly random direction."""
        directions = rng.integers(DIRECTIONS, size=tips_BK2.shape[:2])
        starts = self.cells(tips_BK2 - self.margin * _unit(directions))
        cells = (self.base[:, None] + starts)[..., None] + self.stencils.paths[directions]
        fits = (self.flat[cells] == 0).all(-1)
        first = fits.argmax(1)
        scenes = np.arange(len(starts))
        start, direction = starts[scenes, first], directions[scenes, first]
        started = where_B & fits.any(1)
        self.mark(np.flatnonzero(started), start[started], direction[started])
        pivots = [start, start + self.stencils.steps[direction]]
        return _Contours(pivots, [direction]), started

    def extend(
        self, rng: np.random.Generator, contours: _Contours, alive_B: np.ndarray
    ) -> np.ndarray:
        """Adds the next link of the contour of each scene `alive_B` holds; returns the scenes
        still alive (the others met a dead end and keep their last pivot). The turn is drawn
        with weight cos^2(min(continuity * |turn|, pi/2)) among the turns whose link fits;
        cells of the contour's own last link's zone, which the new link shares at the pivot,
        count once less."""
        stencils = self.stencils
        # Copies: a scene that met a dead end keeps its pivot and direction.
        pivot, previous = contours.pivots[-1].copy(), contours.directions[-1].copy()
        live = np.flatnonzero(alive_B)
        pick, draw = rng.random((2, len(live)))
        rows = (pick * len(stencils.turns)).astype(int)
        before, at = previous[live], pivot[live]
        directions = (before[:, None] + stencils.turns[rows]) % DIRECTIONS
        taken = self.flat[(self.base[live] + at)[:, None, None] + stencils.paths[directions]]
        fits = (taken <= stencils.own[before, rows]).all(-1)
        cumulative = np.cumsum(stencils.weights[rows] * fits, axis=1)
        total = cumulative[:, -1]
        choice = np.minimum((cumulative <= (draw * total)[:, None]).sum(1), fits.shape[1] - 1)
        ok = total > 0
        live, direction = live[ok], directions[ok, choice[ok]]
        self.mark(live, at[ok], direction)
        previous[live] = direction
        pivot[live] += stencils.steps[direction]
        contours.directions.append(previous)
        contours.pivots.append(pivot)
        alive = np.zeros_like(alive_B)
        alive[live] = True
        return alive

    def paddles(self, contours: _Contours, scene: int) -> np.ndarray:
        """paddles_N22 of one scene's contour: each paddle's (start, end) as (row, column), its
        link less `margin` at both ends."""
        pivots = self.points([p[scene] for p in contours.pivots])
        span = pivots[1:] - pivots[:-1]
        inset = self.margin * span / np.linalg.norm(span, axis=1, keepdims=True)
        return np.stack([pivots[:-1] + inset, pivots[1:] - inset], axis=1)

    def first_tips(self, contours: _Contours) -> np.ndarray:
        """tips_B2: where each scene's contour starts (its first paddle's start)."""
        first, second = self.points(contours.pivots[0]), self.points(contours.pivots[1])
        span = second - first
        return first + self.margin * span / np.linalg.norm(span, axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Drawing:
    """One generated example and the geometry behind it (coordinates are (row, column) pixels,
    pixel centres at integers).

    image: (R, R) uint8.
    label: 1 if both markers lie on target A, 0 if the second lies on target B.
    markers: (2, 2) marker centres: the start of A, then the far end of A or of B.
    paddles: per contour (targets, then distractors) an (N, 2, 2) array of its paddles' (start,
      end) in order along it; joining each paddle's end to the next one's start redraws the
      contour without gaps.
    """

    image: np.ndarray
    label: int
    markers: np.ndarray
    paddles: tuple[np.ndarray, ...]


def _grow_targets(
    scenes: _Scenes, rng: np.random.Generator, contour_length: int
) -> tuple[list[_Contours], np.ndarray]:
    """(the two target contours, the scenes where both fit): grown a link each in turn, so
    neither gets the room first; A starts near the centre, B `seed_distance` from A's start."""
    geometry, count = scenes.geometry, len(scenes.taken)
    low, high = 2 * geometry.seed_distance, scenes.size - 1 - 2 * geometry.seed_distance
    tips = rng.uniform(low, high, (count, SEED_TRIES, 2))
    first, alive = scenes.start(rng, tips, np.ones(count, bool))
    around = rng.uniform(0, DIRECTIONS, (count, SEED_TRIES))
    tips = scenes.first_tips(first)[:, None] + geometry.seed_distance * _unit(around)
    second, alive = scenes.start(rng, tips, alive)
    targets = [first, second]
    for _ in range(contour_length - 1):
        for contour in targets:
            alive = scenes.extend(rng, contour, alive)
        if not alive.any():
            break
    return targets, alive


def _marker_is_clear(
    scene: _Scenes, centre: np.ndarray, paddles: list[np.ndarray], carrier: tuple[int, int]
) -> bool:
    """Whether a marker keeps its clearance from every target link but the one it sits on
    (carrier: (target, paddle)); a link reaches `margin` beyond its paddle's ends."""
    starts, ends = [], []
    for index, contour in enumerate(paddles):
        keep = np.ones(len(contour), bool)
        if index == carrier[0]:
            keep[carrier[1]] = False
        span = contour[:, 1] - contour[:, 0]
        inset = scene.margin * span / np.linalg.norm(span, axis=1, keepdims=True)
        starts.append((contour[:, 0] - inset)[keep])
        ends.append((contour[:, 1] + inset)[keep])
    distances = _distances(centre[None], np.concatenate(starts), np.concatenate(ends))
    return bool((distances >= scene.geometry.marker_clearance(scene.margin)).all())


def _draw_targets(
    rng: np.random.Generator, resolution: int, contour_length: int, label: int, margin: int
) -> tuple[_Scenes, np.ndarray, list[np.ndarray]]:
    """(the scene, markers_22, the targets' paddles): batches of attempts, growing in size,
    until one fits with its markers; the first that does is taken (as a redraw loop would)."""
    attempts, batch = 0, 8
    while attempts < MAX_ATTEMPTS:
        scenes = _Scenes.blank(resolution, margin, batch)
        targets, alive = _grow_targets(scenes, rng, contour_length)
        # Which target carries the start marker is drawn here, as in the original.
        starting = rng.integers(2, size=batch)
        for index in np.flatnonzero(alive):
            a = int(starting[index])
            b = a if label else 1 - a
            paddles = [scenes.paddles(contour, index) for contour in targets]
            markers = np.stack([paddles[a][0, 0], paddles[b][-1, 1]])
            carriers = [(a, 0), (b, contour_length - 1)]
            clear = map(_marker_is_clear, [scenes] * 2, markers, [paddles] * 2, carriers)
            if all(clear):
                return scenes.select(index), markers, paddles
        attempts += batch
        batch = min(4 * batch, MAX_BATCH)
    raise UserError(
        f"config.task_options.contour_length={contour_length}: two contours of that many "
        f"paddles did not fit a {resolution}x{resolution} image in {attempts} attempts; "
        "use a shorter one (LRA uses 6, 9 and 14)"
    )


def _add_distractors(
    scene: _Scenes, rng: np.random.Generator, contour_length: int
) -> tuple[_Scenes, list[np.ndarray]]:
    """(the scene with them, the paddles of distractor contours of contour_length // 3 paddles).
    Each gets DISTRACTOR_TRIES tries at once and the first that fits is kept (as retrying
    would); one that never fits is left out."""
    length = max(1, contour_length // 3)
    low, high = scene.geometry.padding, scene.size - 1 - scene.geometry.padding
    everywhere = np.ones(DISTRACTOR_TRIES, bool)
    distractors = []
    for _ in range(scene.geometry.distractor_paddles // length):
        tries = _Scenes(scene.size, scene.margin, np.repeat(scene.taken, DISTRACTOR_TRIES, 0))
        tips = rng.uniform(low, high, (DISTRACTOR_TRIES, SEED_TRIES, 2))
        contour, alive = tries.start(rng, tips, everywhere)
        for _ in range(length - 1):
            alive = tries.extend(rng, contour, alive)
        if alive.any():
            first = int(alive.argmax())
            scene = tries.select(first)
            distractors.append(tries.paddles(contour, first))
    return scene, distractors


def _supersample_grid(centres_N2: np.ndarray, radius: float) -> tuple[np.ndarray, ...]:
    """(rows_NH, columns_NH, dy_NH, dx_NH): around each centre, the fine-grid rows and columns
    (SUPERSAMPLE per pixel) within `radius` pixels of it, and their sample points' offsets from
    it in pixels (a sample point is a fine cell's centre)."""
    s = SUPERSAMPLE
    r = math.ceil(radius * s) + 1
    cells = np.floor((centres_N2 + 0.5) * s).astype(int)[:, :, None] + np.arange(-r, r + 1)
    offsets = (cells + 0.5) / s - 0.5 - centres_N2[:, :, None]
    return cells[:, 0], cells[:, 1], offsets[:, 0], offsets[:, 1]


def _coverage(resolution: int, rows_NH, columns_NH, inside_NHH: np.ndarray) -> np.ndarray:
    """coverage_RR in [0, 1]: the fraction of each pixel's SUPERSAMPLE^2 sample points inside
    (inside_NHH[n, i, j] for the point at rows_NH[n, i], columns_NH[n, j]; off-image ones
    ignored)."""
    s = SUPERSAMPLE
    fine = resolution * s
    inside_NHH = inside_NHH & ((rows_NH >= 0) & (rows_NH < fine))[:, :, None]
    inside_NHH &= ((columns_NH >= 0) & (columns_NH < fine))[:, None, :]
    grid = np.zeros((fine, fine), bool)
    grid[np.broadcast_to(rows_NH[:, :, None], inside_NHH.shape)[inside_NHH],
         np.broadcast_to(columns_NH[:, None, :], inside_NHH.shape)[inside_NHH]] = True  # fmt: skip
    # Summed one axis at a time: numpy reduces contiguous axes far faster.
    counts = grid.reshape(resolution, s, fine).sum(1, dtype=np.uint8)
    counts = counts.reshape(resolution, resolution, s).sum(2, dtype=np.uint8)
    return counts.astype(np.float32) / s**2


def _paddle_coverage(resolution: int, paddles_N22: np.ndarray, thickness: float) -> np.ndarray:
    """coverage_RR of the paddles: thickness-wide rectangles (flat ends, as the original's
    lines), sampled at SUPERSAMPLE^2 points per pixel."""
    middle = paddles_N22.mean(1)
    span = paddles_N22[:, 1] - paddles_N22[:, 0]
    half_length = np.linalg.norm(span, axis=1) / 2
    sin, cos = (span / (2 * half_length[:, None])).T[:, :, None, None]
    rows, columns, dy, dx = _supersample_grid(middle, half_length.max() + thickness / 2)
    dy, dx = dy[:, :, None], dx[:, None, :]
    along = np.abs(dy * sin + dx * cos) <= half_length[:, None, None]
    across = np.abs(dy * cos - dx * sin) <= thickness / 2
    return _coverage(resolution, rows, columns, along & across)


def _disc_coverage(resolution: int, centres_N2: np.ndarray, radius: float) -> np.ndarray:
    """coverage_RR of discs (the markers), sampled at SUPERSAMPLE^2 points per pixel."""
    rows, columns, dy, dx = _supersample_grid(centres_N2, radius)
    inside = dy[:, :, None] ** 2 + dx[:, None, :] ** 2 <= radius**2
    return _coverage(resolution, rows, columns, inside)


def _render(resolution: int, markers: np.ndarray, paddles: list[np.ndarray]) -> np.ndarray:
    """image_RR uint8: paddles at `contrast` times their coverage, markers at theirs, clipped."""
    geometry = GEOMETRY[resolution]
    lines = _paddle_coverage(resolution, np.concatenate(paddles), geometry.thickness)
    lines *= geometry.contrast
    discs = _disc_coverage(resolution, markers, geometry.marker_radius)
    return np.rint(255 * np.clip(np.maximum(lines, discs), 0, 1)).astype(np.uint8)


def draw_image(rng: np.random.Generator, resolution: int, contour_length: int) -> Drawing:
    """One example: label ~ Bernoulli(0.5) and the margin drawn first, then the targets (redrawn
    until they fit), the markers and the distractors."""
    label = int(rng.integers(2))
    margin = int(rng.choice(GEOMETRY[resolution].margins))
    scene, markers, paddles = _draw_targets(rng, resolution, contour_length, label, margin)
    scene.mark_markers(markers)
    scene, distractors = _add_distractors(scene, rng, contour_length)
    paddles += distractors
    return Drawing(_render(resolution, markers, paddles), label, markers, tuple(paddles))


def example_grid(seed: int = 0, per_label: int = 2, tile: int = 256) -> np.ndarray:
    """grid_HW uint8 for looking at: two rows per size (32, 64, 128; contour length 14), each
    `per_label` label-1 examples, a wider gap, then `per_label` label-0 ones, each upscaled
    (nearest neighbour) to tile x tile pixels on a dark gray background."""
    gap, middle = tile // 32, tile // 8
    width = 2 * per_label * tile + (2 * per_label - 2) * gap + middle + 2 * gap
    rows = []
    rng = np.random.default_rng(seed)
    for resolution in RESOLUTIONS:
        examples = {0: [], 1: []}
        while min(len(images) for images in examples.values()) < 2 * per_label:
            drawing = draw_image(rng, resolution, 14)
            examples[drawing.label].append(drawing.image)
        scale = tile // resolution
        for row in range(2):
            strip = np.full((tile + gap, width), 64, np.uint8)
            left = gap
            for label in (1, 0):
                for image in examples[label][row * per_label : (row + 1) * per_label]:
                    strip[gap:, left : left + tile] = image.repeat(scale, 0).repeat(scale, 1)
                    left += tile + gap
                left += middle - gap
            rows.append(strip)
    rows.append(np.full((gap, width), 64, np.uint8))
    return np.concatenate(rows)
