"""The scheduled jobs on top of the engine: the daily run, drills, check, prune and status."""
