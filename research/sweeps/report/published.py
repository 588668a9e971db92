"""LRA's published numbers beside ours: Table 1's rows of the models that correspond to our
variants (Tay et al. 2020, "Long Range Arena", arXiv 2011.04006), and the caveats that say where
our runs differ from theirs. The one home of these numbers; tables.py shows them.

Path-X: every model failed it (None here, "fail" in the table), so Table 1's Avg is the mean over
the other five tasks, and so is ours.
"""

CITATION = "Tay et al. 2020, arXiv 2011.04006, Table 1"

# Accuracy (%) per task (our task labels), in Table 1's row order.
TABLE_1 = {
    "Transformer": {
        "listops": 36.37,
        "text": 64.27,
        "retrieval": 57.46,
        "image": 42.44,
        "pathfinder": 71.40,
        "pathx": None,
    },
    "Local Attention": {
        "listops": 15.82,
        "text": 52.98,
        "retrieval": 53.39,
        "image": 41.46,
        "pathfinder": 66.63,
        "pathx": None,
    },
    "Linear Trans.": {
        "listops": 16.13,
        "text": 65.90,
        "retrieval": 53.09,
        "image": 42.34,
        "pathfinder": 75.30,
        "pathx": None,
    },
    "Performer": {
        "listops": 18.01,
        "text": 65.40,
        "retrieval": 53.82,
        "image": 42.77,
        "pathfinder": 77.05,
        "pathx": None,
    },
}
# Table 1's Avg column as printed (the mean of the five tasks but Path-X, rounded).
TABLE_1_AVG = {
    "Transformer": 54.39,
    "Local Attention": 46.06,
    "Linear Trans.": 50.55,
    "Performer": 51.41,
}
# Our variant -> its Table 1 row; the other variants have none.
ROW_OF_VARIANT = {
    "full": "Transformer",
    "local": "Local Attention",
    "block_local": "Local Attention",
    "linear": "Linear Trans.",
    "performer": "Performer",
}
# Table 1's Text reviews were 4K bytes long (LRA's released config keeps 1K).
TABLE_1_TEXT_BYTES = 4_000
PADDED_TASKS = ("listops", "text", "retrieval")  # variable-length inputs, padded in a batch


def caveats(
    tasks: set[str], rows: dict[str, list[str]], generated: set[str], text_lengths: set[int]
) -> list[str]:
    """One line per difference between our runs and Table 1 that applies to what is shown:
    `tasks` the columns, `rows` the published rows shown and our variants beside each,
    `generated` the tasks whose data our runs generated (not read from LRA's release),
    `text_lengths` the bytes our Text runs keep."""
    lines = []
    if "listops" in tasks & generated:
        lines.append(
            "ListOps: our expressions are generated here with LRA's procedure "
            "(research/tasks/listops.py), not read from LRA's released files."
        )
    if tasks & generated & {"pathfinder", "pathx"}:
        lines.append(
            "Pathfinder/Path-X: our images are drawn here by Linsley et al.'s procedure at LRA's "
            "settings (research/tasks/pathfinder/), not read from LRA's released images."
        )
    if "text" in tasks and text_lengths - {TABLE_1_TEXT_BYTES}:
        ours = ", ".join(f"{n:,}" for n in sorted(text_lengths))
        lines.append(
            f"Text: ours keeps the first {ours} bytes of each review (configs/text.py follows "
            "LRA's released config, 1,000); Table 1 used 4,000."
        )
    if "Local Attention" in rows:
        kinds = {"local": "local: a sliding window", "block_local": "block_local: blocks on the "
                 "diagonal"}  # fmt: skip
        ours = ", ".join(kinds[v] for v in rows["Local Attention"] if v in kinds)
        lines.append(
            "Local Attention: LRA's groups are strided (position mod the number of groups); ours "
            f"are contiguous ({ours})."
        )
    if "Performer" in rows:
        lines.append(
            "Performer: LRA's default kernel is ReLU (deterministic features); ours is FAVOR+ "
            "(positive random features for the softmax kernel)."
        )
        if "listops" in tasks:
            lines.append("Performer on ListOps: LRA's used 2 features.")
    unmasked = [row for row in ("Linear Trans.", "Performer") if row in rows]
    if unmasked and tasks & set(PADDED_TASKS):
        lines.append(
            f"{' and '.join(unmasked)}: LRA's implementation ignores the padding mask (padded "
            "positions enter its sums); ours leaves padded keys out."
        )
    return lines
