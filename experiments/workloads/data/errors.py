"""The one error a missing dataset raises; the runner prints its message and exits with status 2."""


class DatasetMissingError(FileNotFoundError):
    """A dataset is not where the workload expects it; the message names the expected layout."""
