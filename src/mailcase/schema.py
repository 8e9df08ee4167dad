"""The whole schema: the core tables plus every feature's, on one MetaData.

Features declare their tables in their own `models` modules (on `storage.models.Base`); this
module imports them all so that Alembic and the model/migration comparison see everything.
"""

from __future__ import annotations

import mailcase.features.cases.automation.models
import mailcase.features.cases.models
import mailcase.features.tasks.models
import mailcase.features.users.models
import mailcase.outbound.bounces.models
import mailcase.outbound.dkim_models
import mailcase.outbound.models
import mailcase.sources.models  # noqa: F401 - imported for their tables
from mailcase.storage.models import metadata

__all__ = ["metadata"]
