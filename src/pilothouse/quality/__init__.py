"""Online quality: the hallucination detector, guardrails, online evaluators, monitors and alerts, and
human review. Each part lives in its own subpackage; the public names are re-exported here."""
