"""``python -m cloud.payments.sandbox``: the sandbox provider's stand-in server (``server.py``)."""

import sys

from cloud.payments.sandbox.server import main

sys.exit(main())
