"""``workers.workflows``: errors a workflow raises on purpose."""


class NonRetryableError(Exception):
    """Raised inside a step: stop retrying it and raise into ``run()`` at once."""


__all__ = ["NonRetryableError"]
