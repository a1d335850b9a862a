"""Stock: purchase, sale and inventory. Products, purchase orders to suppliers, goods received as lots,
the warehouse valued at moving average cost, an append-only book of movements (receipts, transfers to
machines, sales, adjustments), pick lists per machine and per route, restocks confirmed by the machines'
ledgers, stock takes, and low-stock and expiry alerts.

| part            | holds                                                                      |
| --------------- | -------------------------------------------------------------------------- |
| ``catalog``     | ``product_details``: barcode, cost, price, currency, shelf life, reorder    |
| ``book``        | ``lots``, ``stock_movements``, ``stock_ops``: every quantity and value      |
| ``purchasing``  | ``purchase_orders``, their lines, ``receipts``                             |
| ``takes``       | ``stock_takes`` and their lines                                            |
| ``picking``     | ``routes``, ``route_stops``; pick lists; alerts                            |
| ``visits``      | ``route_loads``, ``restock_reports``: the technician's loaded and restocked |
| ``routes``      | the HTTP API                                                               |
| ``tech``        | the technician's phone view (``/tech``) and its API                        |
| ``cli``         | ``vendctl products``, ``purchase-orders``, ``stock``, ``pick-list``, ``tech`` |

Who may call what (a wrong role gets 403 and nothing changes):

| route class                                                     | admin | manager | technician | supplier |
| --------------------------------------------------------------- | ----- | ------- | ---------- | -------- |
| read products; routes, pick lists, stock alerts                 | yes   | yes     | yes        | no       |
| change products, routes; purchase orders: create, send, receive, cancel; stock takes | yes | yes | no | no |
| read the warehouse, its value, movements, stock takes           | yes   | yes     | no         | no       |
| read purchase orders; confirm a sent one                        | yes   | yes     | no         | its own  |

The machines' side comes in through ``book.ledger_counts``, which ``cloud/sync/ingest.py`` calls with the restock
and stock.adjusted events of a batch, inside the batch's transaction. The package imports nothing itself,
so that ``vendctl`` (``cli``) loads without the cloud's web and database libraries.
"""
