"""Studies made of many runs: the matched comparison's learning-rate search
(:mod:`gainbench.study.search`, pure; :mod:`gainbench.study.matching`, which runs the protocol)."""
