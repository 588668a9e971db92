"""Local attention's window against the distance of the dependency it must reach: the distance
task (configs/distance.py) asks, at every position, whether the symbol `distance` positions back is
the same. One layer of sliding-window attention with window w sees w positions back, so it should
be perfect for distance <= w and at chance (50%) beyond; full attention is the reference row.

  ./launch.sh sweep experiments/window.py --parallel 2

Measured on a 2-core CPU (10.5 minutes at --parallel 2; experiments/results/window/report.md):
local attention with window w scores 99.5-100% at every distance <= w and 49.3-50.0% beyond it;
full attention 98.6-99.7% at every distance.
"""

CONFIG = "configs/distance.py:size=tiny"


def get_hyper(h):
    distances = h.sweep("arg.distance", [4, 8, 16, 32])
    full = h.product([h.fixed("config.model.attention", "full"), distances])
    local = h.product(
        [
            h.fixed("config.model.attention", "local"),
            h.sweep("config.model.attention_options.local.window", [4, 8, 16]),
            distances,
        ]
    )
    return h.chainit([full, local])
