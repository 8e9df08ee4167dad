"""Tables of this feature, declared on `mailcase.storage.models.Base` (placeholder).

The matching migration is the source of truth; `tests/unit/storage/test_db.py` compares them.
"""

from __future__ import annotations

__all__: list[str] = []
