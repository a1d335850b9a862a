"""13: schemathesis against the cloud's OpenAPI document, every API operation, as the administrator.

Two properties for every generated request (valid and invalid bodies, parameters and paths):

* no 5xx, ever (schemathesis' ``not_a_server_error``);
* a request the API refuses (any 4xx) wrote nothing: the content of every table is the same after it as
  before it. Left out on purpose: ``login_failures`` (counting a refused sign-in is that table's job) and
  ``api_tokens.last_used_at`` (authenticating the token stamps it before the route decides).

The run is bounded and repeatable for CI: ``MAX_EXAMPLES`` per operation, derandomized, no deadline. It runs
on SQLite only (one shared database for the module, so the cost is a few seconds per operation); the
routes' SQL is the same on PostgreSQL and is covered there by the other web tests.
"""

from __future__ import annotations

import hashlib
import shutil

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

import cloud.app
import cloud.schema
from cloud.fleet.machines import products
from tests.cloud_fixtures import add_customer, add_machine, add_sale, fast_hashes, idle_cloud  # noqa: F401

ADMIN = {"Authorization": "Bearer admintoken"}
MAX_EXAMPLES = 25
# What a refused request may legitimately write: a failed sign-in is counted (and locks the name), and
# authenticating a token stamps its last use (at most once a LAST_USED_EVERY) before the route decides.
MAY_CHANGE_WHEN_REFUSED = {"login_failures"}
COLUMNS_MAY_CHANGE_WHEN_REFUSED = {("api_tokens", "last_used_at")}
TABLES = [t for name, t in sorted(cloud.schema.load_tables().tables.items()) if name not in MAY_CHANGE_WHEN_REFUSED]


@pytest.fixture(scope="module")
def fuzz_cloud(tmp_path_factory):
    var = tmp_path_factory.mktemp("fuzz")
    obj = idle_cloud(var, f"sqlite:///{var}/c.db")
    obj.db_file = f"{var}/c.db"
    with obj.engine.begin() as conn:
        add_machine(conn)
        customer = add_customer(conn)
        add_sale(conn, customer)
        product = conn.execute(sa.select(products.c.id).where(products.c.sku == "cola")).scalar_one()
    # Ids that exist, put in place of the generated path parameters in part of the examples, so the requests
    # reach past "not found"; the small integers name what the fuzzed POSTs create first.
    obj.known_ids = dict(machine_id="m-1", order_id="o-sold", customer=customer, product_id=product, sku="cola",
                         period="2024-05", location_id=1, po_id=1, route_id=1, supplier_id=1, token_id=1, user_id=1)
    yield obj
    obj.engine.dispose()


def fingerprint(engine) -> dict[str, str]:
    """A digest of every row of every table (but those a refusal may touch): cheap on the small database."""
    out = {}
    with engine.connect() as conn:
        for table in TABLES:
            columns = [c for c in table.c if (table.name, c.name) not in COLUMNS_MAY_CHANGE_WHEN_REFUSED]
            rows = sorted(repr(tuple(r)) for r in conn.execute(sa.select(*columns)))
            out[table.name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16] + f"/{len(rows)}"
    return out


def check_one(case, engine) -> None:
    before = fingerprint(engine)
    case.headers = {**(case.headers or {}), **ADMIN}  # a generated Authorization would win over call(headers=)
    response = case.call()
    case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])
    if 400 <= response.status_code < 500:
        after = fingerprint(engine)
        changed = sorted(name for name in before if before[name] != after[name])
        assert not changed, (f"{case.method} {case.formatted_path} refused ({response.status_code} "
                             f"{response.text[:200]!r}) but wrote to {changed}")


def with_known_ids(known: dict):
    def put(case):
        for name in case.path_parameters or {}:
            if name in known:
                case.path_parameters[name] = known[name]
        return case
    return put


def fuzz(operation, engine, known: dict) -> None:
    """MAX_EXAMPLES requests for one operation, valid and invalid, with generated and with existing ids;
    repeatable."""
    generated = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE))
    cases = st.one_of(generated, generated.map(with_known_ids(known))) if "{" in operation.path else generated

    @given(cases)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    def run(case):
        check_one(case, engine)

    run()


def test_every_api_operation_answers_no_5xx_and_a_refusal_writes_nothing(fuzz_cloud):
    app = cloud.app.create_app(fuzz_cloud, "admintoken", b"k" * 32)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app, headers=ADMIN)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 70, "the OpenAPI document lost its operations"
    # Each operation starts from the same database: one that revokes the administrator's token or disables
    # the administrator (DELETE /tokens/1, PATCH /people/1) must not turn every later operation into a 401.
    fuzz_cloud.engine.dispose()
    shutil.copyfile(fuzz_cloud.db_file, fuzz_cloud.db_file + ".start")
    failures = []
    for operation in operations:
        fuzz_cloud.engine.dispose()
        shutil.copyfile(fuzz_cloud.db_file + ".start", fuzz_cloud.db_file)
        try:
            fuzz(operation, fuzz_cloud.engine, fuzz_cloud.known_ids)
        except Exception as e:  # noqa: BLE001 - every operation runs; each failure is reported below
            failures.append(f"{operation.label}: {type(e).__name__}: {describe(e)[:3000]}")
    assert not failures, f"{len(failures)} of {len(operations)} operations failed:\n\n" + "\n\n".join(failures)


def describe(e: BaseException) -> str:
    """The failure with its sub-exceptions (a flaky one keeps the real failure in them)."""
    subs = getattr(e, "exceptions", ())
    return str(e) + "".join(f"\n  - {type(s).__name__}: {s}" for s in subs)
