"""Policy files, layer by layer.

* `problems`: PolicyProblem and PolicyError, what every layer reports.
* `reader`:   bytes -> TOML data, hardened (size, encoding, nesting, syntax with LINE:COL).
* `schema`:   a generic checker for the shapes of decoded TOML (keys, strings, enums, paths).
* `rules`:    the policy's own meaning: top level, rule keys every kind has, allowlists,
  allow.d files, and contradictions between rules; each rule kind's own keys are
  checked by its module in `enforcer.kinds`.

`enforcer.parse` is the public entry point.
"""
