"""The one exception type the pipeline raises for bad input.

A `PipelineError` carries a message meant for the user: one line that names the
problem. Stage scripts print it and exit non-zero (see `cli.run_stage`).
"""


class PipelineError(Exception):
    """A user-facing error: bad params, bad data, an unreachable source."""
