"""A manager imports DEX files on the audits page, in a real browser against a real cloud process."""

from tests.browser.browsing import add_staff, shot, sign_in
from tests.dex.files import jofemar_next_day, path


def test_a_manager_imports_a_legacy_machine_s_reads(cloud, desk, tmp_path):
    add_staff(cloud, "dora", "manager")
    sign_in(desk, cloud, "dora")
    desk.goto(cloud.url + "/staff/audits")
    assert desk.locator("h1").inner_text() == "Audits"
    assert "No audits imported yet." in desk.locator("table").inner_text()

    # A machine the fleet has never seen: refused, and the page says how to go on.
    desk.get_by_label("File (at most 4 MB)").set_input_files(path("jofemar-sample.dex"))
    desk.get_by_role("button", name="Import").click()
    desk.wait_for_load_state()
    alert = desk.get_by_role("alert").inner_text()
    assert "Not imported: jofemar-sample.dex: no machine in the fleet has sent audits with serial 'JOF'" in alert
    shot(desk, "audits-unknown-machine")

    desk.get_by_label("File (at most 4 MB)").set_input_files(path("jofemar-sample.dex"))
    desk.get_by_label("Add the machine to the fleet if it is not there").check()
    desk.get_by_role("button", name="Import").click()
    desk.wait_for_load_state()
    assert desk.get_by_role("status").inner_text() == (
        "Audit 1 of machine dex-jof: First read: baseline, no sales; 0 sales, €0.00.")

    later = tmp_path / "jofemar-2.dex"
    later.write_bytes(jofemar_next_day())
    desk.get_by_label("File (at most 4 MB)").set_input_files(str(later))
    desk.get_by_role("button", name="Import").click()
    desk.wait_for_load_state()
    assert desk.get_by_role("status").inner_text() == (
        "Audit 2 of machine dex-jof: Sales since the previous read; 2 sales, €7.60.")
    first_row = desk.locator("tbody tr").first.inner_text()
    assert "dex-jof" in first_row and "425, €1,442.60" in first_row and "2, €7.60" in first_row
    shot(desk, "audits-delta")

    # The legacy machine is in the fleet, and its two sales in the sales API.
    desk.goto(cloud.url + "/staff")
    assert "dex-jof" in desk.locator("table.fleet").inner_text()
    desk.locator("table.fleet").get_by_role("link", name="DEX JOF").click()  # the fleet table, not the week's
    desk.get_by_role("link", name="DEX audits of this machine").click()
    desk.wait_for_load_state()
    assert desk.locator("tbody tr").count() == 2 and desk.get_by_label("Machine (leave").input_value() == "dex-jof"
    sales = cloud.api("GET", "/api/v1/sales?machine=dex-jof")
    assert sales["totals"] == [{"currency": "EUR", "count": 2, "amount": 760}]
    assert {s["source"] for s in sales["sales"]} == {"audit"}
