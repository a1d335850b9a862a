"""EVA-DTS (DEX/UCS) audits, read and written: the vending industry's own record of a machine's sales.

``read``/``read_file`` turn a file into an ``Audit``; ``write`` makes one from a machine's ledger.
This package stands alone (the cloud and the controller may import it; it imports neither).
"""

from dex.model import Audit, Check, Counters, Event, Identity, PaymentLine, Problem, Product, PriceList, Segment
from dex.reader import MAX_BYTES, DexError, read, read_file

__all__ = ["Audit", "Check", "Counters", "DexError", "Event", "Identity", "MAX_BYTES", "PaymentLine", "PriceList",
           "Problem", "Product", "Segment", "read", "read_file"]
