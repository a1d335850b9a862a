"""People: customers (phones that registered from a QR page), suppliers, and staff with roles; their
sign-in (web sessions and API tokens), the ``require(role...)`` check every API route makes, and the
audit trail every state-changing API call writes.

Who may do what (a wrong role gets 403 and nothing changes; no valid credentials get 401):

| route class                                                                     | administrator | manager | technician | supplier |
| ------------------------------------------------------------------------------- | ------------- | ------- | ---------- | -------- |
| own account: /me, /me/password, /logout, /tokens                                | yes           | yes     | yes        | yes      |
| read the fleet: machines, slots, planograms, locations, alerts, ingest counters | yes           | yes     | yes        | no       |
| read sales                                                                      | yes           | yes     | no         | no       |
| change the fleet: machines, cabinets, slots, planograms, locations              | yes           | yes     | no         | no       |
| suppliers: list, add, change                                                    | yes           | yes     | no         | no       |
| a supplier's own record                                                         | yes           | yes     | no         | its own  |
| staff: list, add, change role, disable; the audit trail                         | yes           | no      | no         | no       |
| payments: refund a sale, read a customer's wallet                                | yes           | yes     | no         | no       |
| customers: list, read a customer's orders, wallet and payment method            | yes           | yes     | no         | no       |
| customers: block one from buying, unblock                                       | yes           | no      | no         | no       |
| finance: journal, statements, settlement rules, reconciliation, supplier payments | yes           | yes     | no         | no       |
| finance: a supplier's statement                                                  | yes           | yes     | no         | its own  |

Technicians service machines at the machine (its service mode writes to the ledger), so the cloud lets
them read the fleet but not change it. A supplier account is linked to one supplier and sees that
supplier's record and purchase orders (the table in ``cloud/stock/__init__.py`` has the stock routes).
Other modules' routers use the tuples below (``Depends(require(*FLEET_EDITORS))``) so that the table
stays true in one place.
"""

from __future__ import annotations


from cloud.people import audit, auth, staff
from cloud.people.auth import SESSION_COOKIE, Caller, Gate, require
from cloud.people.customers import (COOKIE, PHONE_RE, AlreadyRegistered, CookieSigner, RegistrationError, by_phone, clean_email,
                                    clean_name, clean_phone, customers, get, new_secret, register,
                                    search, set_blocked, set_payment_method)
from cloud.people.staff import ADMINISTRATOR, MANAGER, ROLES, SUPPLIER, TECHNICIAN, PeopleError

OWN_ACCOUNT = ROLES
FLEET_READERS = (ADMINISTRATOR, MANAGER, TECHNICIAN)
SALES_READERS = (ADMINISTRATOR, MANAGER)
FLEET_EDITORS = (ADMINISTRATOR, MANAGER)
SUPPLIER_EDITORS = (ADMINISTRATOR, MANAGER)
PEOPLE_ADMINS = (ADMINISTRATOR,)
WALLET_CREDITORS = (ADMINISTRATOR,)  # grant a customer money in their wallet, with a reason
SECRET_ADMINS = (ADMINISTRATOR,)  # rotate a machine's secrets
PROVISIONERS = (ADMINISTRATOR, TECHNICIAN)  # read a machine's secrets to write its SD card
STOCK_EDITORS = (ADMINISTRATOR, MANAGER)  # products, purchase orders, receipts, stock takes, routes
STOCK_READERS = (ADMINISTRATOR, MANAGER)  # the warehouse and its value, movements, stock takes
CATALOG_READERS = (ADMINISTRATOR, MANAGER, TECHNICIAN)  # products
PICKERS = (ADMINISTRATOR, MANAGER, TECHNICIAN)  # routes, pick lists, stock alerts
PO_READERS = (ADMINISTRATOR, MANAGER, SUPPLIER)  # a supplier: only the orders addressed to it
PO_CONFIRMERS = (ADMINISTRATOR, MANAGER, SUPPLIER)  # a supplier: only its own; staff record a phoned one
REFUNDERS = (ADMINISTRATOR, MANAGER)  # refund a sale
CUSTOMER_BLOCKERS = PEOPLE_ADMINS  # block a customer from buying, and unblock
WALLET_READERS = (ADMINISTRATOR, MANAGER)  # a customer's wallet balance and history
FINANCE_READERS = (ADMINISTRATOR, MANAGER)  # the journal, statements, reconciliation
FINANCE_EDITORS = (ADMINISTRATOR, MANAGER)  # settlement rules, supplier payments, posting statements
SUPPLIER_STATEMENT_READERS = (ADMINISTRATOR, MANAGER, SUPPLIER)  # a supplier: only its own

__all__ = [
    "ADMINISTRATOR", "CATALOG_READERS", "COOKIE", "FINANCE_EDITORS", "FINANCE_READERS", "FLEET_EDITORS",
    "FLEET_READERS", "MANAGER", "OWN_ACCOUNT", "SUPPLIER_STATEMENT_READERS",
    "PEOPLE_ADMINS", "PHONE_RE", "PICKERS", "PO_CONFIRMERS", "PO_READERS", "PROVISIONERS",
    "REFUNDERS", "SECRET_ADMINS", "ROLES", "SALES_READERS", "SESSION_COOKIE", "STOCK_EDITORS", "STOCK_READERS",
    "SUPPLIER", "SUPPLIER_EDITORS", "TECHNICIAN", "WALLET_CREDITORS", "WALLET_READERS", "AlreadyRegistered", "Caller",
    "CookieSigner", "Gate", "PeopleError", "RegistrationError", "audit", "auth", "by_phone", "clean_email",
    "clean_name", "clean_phone",
    "customers", "get", "new_secret", "register", "require", "set_payment_method", "staff",
]
