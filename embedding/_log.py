"""The embedding package's logger and the logging set-up shared by every command line."""

from __future__ import annotations

import logging

logger = logging.getLogger("encore.embedding")


def configure_cli_logging(verbose: int = 0) -> None:
    """Send Encore's log records to stderr; called only by the ``main()`` of a command.

    Parameters
    ----------
    verbose : int, optional (default=0)
        0 shows INFO and above, 1 or more shows DEBUG.
    """
    level = logging.DEBUG if verbose > 0 else logging.INFO
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("encore").setLevel(level)
