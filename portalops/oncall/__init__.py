"""On-call: rotations, escalation and paging for the portals' alerts."""
