"""Audits: EVA-DTS (DEX) files of machines imported as deltas that feed sales, stock and finance.

See ``cloud/audits/imports.py`` for the rules and ``docs/dex.md`` for the operator's view.
"""

from cloud.audits.imports import AuditError, Imported, audit_of, import_audit, list_audits

__all__ = ["AuditError", "Imported", "audit_of", "import_audit", "list_audits"]
