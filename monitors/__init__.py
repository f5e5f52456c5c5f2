"""Article 19 monitoring: probes, posture audits and the graders that judge what they saw."""
