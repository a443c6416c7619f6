"""The retrieval package's logger."""

from __future__ import annotations

import logging

logger = logging.getLogger("encore.retrieval")
