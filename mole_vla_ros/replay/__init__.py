"""Offline rosbag replay through the same node core as the live node (`mole-vla replay`, `make demo`).

Modules: `bag` (open sqlite3/MCAP bags, Humble or Jazzy metadata), `topics` (which bag topic feeds which node input,
where outputs go), `engine` (the loop on bag time, driving the node's own `ros.node_io.NodeIO`),
`writer` (the output MCAP), `metrics` / `report` / `plots` (scoring and the report), `untrained` (a labelled random
model for running the pipeline without a trained one), `synthetic` (SYNTHETIC bags for tests), `cli`.
"""
