"""`liif bench`: quality on the standard SR test sets (`quality`), and speed against the
paper's straightforward decoder (`speed`).

Library code: nothing here prints except the table helpers in `report`, which take a Rich
Console, and `bench_command`, which does everything a parsed `liif bench` command line asks
for. `options` parses and checks the options without torch; `common` holds what both benchmarks
share.
"""

from .command import bench_command

__all__ = ["bench_command"]
