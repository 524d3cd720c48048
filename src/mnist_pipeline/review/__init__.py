"""The code-review report: what changed between two revisions, and whether it is real."""
