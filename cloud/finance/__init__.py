"""Finance: the general journal's finance side (goods received, cost of goods sold and stock adjustments
from the stock book, supplier payments), settlement rules and statements per location, supplier
statements, and reconciliation of provider captures against ledger sales and the journal.

| part            | holds                                                                        |
| --------------- | ---------------------------------------------------------------------------- |
| ``common``      | ``FinanceError``, input checks, periods, half-up rounding                     |
| ``ledger``      | ``supplier_payments``; catching the journal up with the stock book; balances  |
| ``settlement``  | ``settlement_rules``, ``statement_postings``; statements and their posting    |
| ``reconcile``   | the reconciliation report                                                    |
| ``routes``      | the HTTP API                                                                 |
| ``cli``         | ``vendctl journal``, ``settlement``, ``reconcile``                            |

The journal itself (accounts, transactions, ``post``) is ``cloud/accounts/journal.py``: there is one.

Who may call what (a wrong role gets 403 and nothing changes):

| route class                                                              | admin | manager | technician | supplier |
| ------------------------------------------------------------------------ | ----- | ------- | ---------- | -------- |
| journal, trial balance, reconciliation, settlement rules and statements  | yes   | yes     | no         | no       |
| add settlement rules, post statements, pay suppliers                     | yes   | yes     | no         | no       |
| a supplier's statement                                                   | yes   | yes     | no         | its own  |

The package imports nothing itself, so that ``vendctl`` (``cli``) loads without the cloud's libraries.
"""
